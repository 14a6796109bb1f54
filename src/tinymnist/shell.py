"""Names and commands shown to a person: a name as its bytes read, a command shell-quoted to paste back."""

from __future__ import annotations


def shell_join(words) -> str:
    """``shlex.join``, except that a word that is not UTF-8 (surrogate escapes, as Python reads such a name) or
    holds a line break or another control character is written as bash's ``$'r\\xe9s'``: pasted back, it names
    the same bytes, where the raw bytes printed to a UTF-8 terminal would come back as another name (issue 30,
    cause 13), and the command stays on one line, in a terminal and in a markdown title."""
    import shlex
    import unicodedata

    def quote(word: str) -> str:
        raw = word.encode("utf-8", "surrogateescape")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:  # a line break or another control character, quoted plainly, would split the command in two
            if not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in word):  # lines (the sixth sweep)
                return shlex.quote(word)
        body = "".join(chr(b) if 32 <= b < 127 and b not in b"'\\" else f"\\x{b:02x}" for b in raw)
        return f"$'{body}'"

    return " ".join(quote(str(w)) for w in words)


def shown(text: str) -> str:
    """A name as a person reads it: a byte that was not UTF-8 (a surrogate escape) as ``\\xe9``, never
    ``\\udce9`` and never a UnicodeEncodeError (issue 30, cause 13)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def console(text: object) -> str:
    """One line for a terminal or a log: ``shown``, and a line break, a carriage return or another control
    character as ``\\x0a``, ``\\r``... A path holding a line break split "wrote PATH" and an error's one line in
    two, and a byte that is not UTF-8 went out raw (the eighth independent sweep of issue 30)."""
    import unicodedata

    def one(ch: str) -> str:
        if unicodedata.category(ch) not in ("Cc", "Zl", "Zp") or ch == "\t":
            return ch
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"

    return "".join(map(one, shown(str(text))))


def fitted(text: str, width: int) -> str:
    """``text`` as shown (``console``) in exactly ``width`` terminal columns: cut with "..." when longer, padded
    when shorter. Counted in columns, not code points: an escaped Latin-1 byte takes four (``\\xe9``) and a
    wide character two, so a table's columns stay aligned (the third sweep of issue 30, F24)."""
    import unicodedata

    def cols(ch: str) -> int:
        if unicodedata.combining(ch):
            return 0
        return 2 if unicodedata.east_asian_width(ch) in "WF" else 1

    text = console(text)  # a subject's "\r" or ESC went to the terminal raw (the ninth independent sweep)
    if sum(map(cols, text)) > width:
        kept, used = [], 0
        for ch in text:
            if used + cols(ch) > width - 3:
                break
            kept.append(ch)
            used += cols(ch)
        text = "".join(kept) + "..."
    return text + " " * (width - sum(map(cols, text)))


def code_span(text: str) -> str:
    """``text`` as one markdown code span, whatever it holds: fenced by one backtick more than its longest run
    of them, and padded where it starts or ends with one (CommonMark's rule). A path with ``|``, ``*`` or a
    backtick in it then shows as itself, and cannot break a title or a table (the third sweep of issue 30)."""
    import re

    text = one_line(text)  # a line break in a code span would let the next line start a heading
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markdown(f"{fence}{pad}{text}{pad}{fence}")


def one_line(text: str) -> str:
    """``text`` on one line, as the console shows it (``console``): a line break or another control character
    escaped (``\\x0a``), so free text from a file (a recipe's name, a commit's subject) cannot start a heading of
    its own, and says what it held (the ninth independent sweep: a space said nothing of a "\\x1b")."""
    return console(text)


class Markdown(str):
    """Text tinymnist wrote as markdown (a code span, ``<br>`` between lines): put in a cell as it is."""


def as_text(text: str) -> str:
    """Free text as itself in markdown, on one line: what would open an HTML tag, a comment or an autolink
    (``<`` before a letter, ``/``, ``!`` or ``?``), an entity (``&amp;``), emphasis or a link is backslash-escaped.
    A commit subject "Optional<Tensor> in <b>heads</b>" lost its "Tensor" and turned bold (the sixth independent
    sweep); "<=" is left alone, so a rule reads the same in a terminal."""
    import re

    text = re.sub(r"<(?=[A-Za-z/!?])", r"\\<", one_line(text))
    text = re.sub(r"&(?=#?\w+;)", r"\\&", text)
    # emphasis and links: every "*", a "_" at a word's edge (not max_shear's), a "[" that opens "[...](" (an
    # image's too), so "*star* [link](http://x)" shows as typed (the seventh independent sweep)
    text = re.sub(r"\*", r"\\*", text)
    text = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)
    return re.sub(r"\[(?=[^\]]*\]\()", r"\\[", text)


def table_row(*cells: object) -> str:
    """One row of a markdown table, each cell its text as itself: on one line, an HTML tag shown as text
    (``as_text``, unless the cell is ``Markdown``), and a ``|`` escaped, which GitHub's tables read as a pipe,
    inside a code span too. Every table row with text from a file or a command line is made here: a recipe
    named "a|b" and a newline in a results file gave REPORT.md a cell and a heading of their own (the fifth
    independent sweep of issue 30)."""

    def cell(c: object) -> str:
        text = one_line(str(c)) if isinstance(c, Markdown) else as_text(str(c))
        return text.replace("|", "\\|")

    return "|" + "|".join(f" {cell(c)} " for c in cells) + "|"


__all__ = ["Markdown", "as_text", "code_span", "fitted", "one_line", "shell_join", "shown", "table_row"]
