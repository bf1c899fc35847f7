"""The session search language: its parser and its compiler to parameterised ClickHouse SQL."""
