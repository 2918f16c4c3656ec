"""The teacher's touch UI (static assets served by the agent)."""
