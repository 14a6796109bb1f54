"""Names and commands shown to a person: a name as its bytes read, a command shell-quoted to paste back."""

from __future__ import annotations


def shell_join(words) -> str:
    """``shlex.join``, except that a word that is not UTF-8 (surrogate escapes, as Python reads such a name) is
    written as bash's ``$'r\\xe9s'``: pasted back, it names the same bytes, where the raw bytes printed to a UTF-8
    terminal would come back as another name (issue 30, cause 13)."""
    import shlex

    def quote(word: str) -> str:
        raw = word.encode("utf-8", "surrogateescape")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            body = "".join(chr(b) if 32 <= b < 127 and b not in b"'\\" else f"\\x{b:02x}" for b in raw)
            return f"$'{body}'"
        return shlex.quote(word)

    return " ".join(quote(str(w)) for w in words)


def shown(text: str) -> str:
    """A name as a person reads it: a byte that was not UTF-8 (a surrogate escape) as ``\\xe9``, never
    ``\\udce9`` and never a UnicodeEncodeError (issue 30, cause 13)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


__all__ = ["shell_join", "shown"]
