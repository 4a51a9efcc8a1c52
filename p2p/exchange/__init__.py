"""Block exchange: the fetch planner, whole-DAG and range fetches, the hand-off to exports, healing reads."""
