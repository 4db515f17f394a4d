"""Kept for code written against earlier kd versions: tokenization lives in kd.data.tokens."""

from kd.data.tokens import TokenCache, TokenColumns, encode

__all__ = ["TokenCache", "TokenColumns", "encode"]
