"""The fleet server: enrollment, configuration, health and the pupil relay."""
