"""Kept for code written against earlier kd versions: the lexical part lives in kd.models.lexical."""

from kd.models.lexical import add_lexical_part

__all__ = ["add_lexical_part"]
