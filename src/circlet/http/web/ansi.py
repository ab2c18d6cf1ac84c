"""Terminal output -> safe HTML: SGR colours become `<span class="...">`, everything is escaped.

The converter is incremental: feed it the chunks of a log in order and it keeps the colour
state, half-received escape sequences and half-received UTF-8 characters between calls, so a
log streamed in pieces renders exactly as the whole log would. Each line can start with a
hidden timestamp (`<span class="ts">`) that the page shows on demand.

Only SGR (`ESC [ ... m`) is rendered; every other escape sequence (cursor moves, erase, OSC
titles) is dropped. Colours become classes, never inline styles (the page's CSP forbids them):
the 16 basic colours as they are, 256-palette and 24-bit (`38;2;r;g;b`, `48;2;...`, also
the colon forms `38:2::r:g:b`) colours as the nearest of the 16 (docs/web.md says why).

A carriage return not followed by a newline is kept as a line break, so progress bars stay
readable instead of piling up on one line.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from datetime import datetime
from html import escape

# ESC [ params final-byte (CSI), ESC ] ... BEL/ST (OSC), or any other two-byte escape.
_ESCAPE = re.compile(r"\x1b(?:\[([0-?]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# Control characters other than tab and newline have no business in a page.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PARTIAL_LIMIT = 256  # an unfinished escape longer than this is garbage, not a sequence


@dataclass
class Style:
    """The SGR state: colours are 0-15 (basic and bright), 16-255 (the 256 palette) or None."""

    fg: int | None = None
    bg: int | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False

    def classes(self) -> str:
        names = []
        if self.fg is not None:
            names.append(f"fg{self.fg}")
        if self.bg is not None:
            names.append(f"bg{self.bg}")
        names += [
            n
            for n, on in (("b", self.bold), ("d", self.dim), ("i", self.italic), ("u", self.underline))
            if on
        ]
        return " ".join(names)

    def apply(self, params: str) -> None:
        """Apply one SGR parameter list (`1;31`, `38;5;208`, `38;2;255;128;0`, empty = reset)."""
        parts = params.split(";") if params else ["0"]
        codes = [_number(p) for p in parts]
        i = 0
        while i < len(codes):
            code = codes[i]
            if ":" in parts[i]:
                self._subparams([_number(p) for p in parts[i].split(":")])
            elif code in (38, 48, 58):  # extended colour: 5;n or 2;r;g;b follow
                i += self._extended(code, codes[i + 1 :])
            elif code == 0:
                self.fg = self.bg = None
                self.bold = self.dim = self.italic = self.underline = False
            elif code == 1:
                self.bold = True
            elif code == 2:
                self.dim = True
            elif code == 3:
                self.italic = True
            elif code == 4:
                self.underline = True
            elif code == 22:
                self.bold = self.dim = False
            elif code == 23:
                self.italic = False
            elif code == 24:
                self.underline = False
            elif 30 <= code <= 37:
                self.fg = code - 30
            elif 90 <= code <= 97:
                self.fg = code - 90 + 8
            elif code == 39:
                self.fg = None
            elif 40 <= code <= 47:
                self.bg = code - 40
            elif 100 <= code <= 107:
                self.bg = code - 100 + 8
            elif code == 49:
                self.bg = None
            i += 1

    def _extended(self, code: int, rest: list[int]) -> int:
        """Apply `code` (38 fg, 48 bg, 58 underline colour: ignored) with the parameters after
        it; the number of those it used (a truncated one uses them all, changing nothing)."""
        if rest[:1] == [5]:
            if len(rest) < 2:
                return len(rest)
            self._colour(code, to16(rest[1]))
            return 2
        if rest[:1] == [2]:
            if len(rest) < 4:
                return len(rest)
            self._colour(code, nearest16(rest[1], rest[2], rest[3]))
            return 4
        return 0

    def _subparams(self, sub: list[int]) -> None:
        """One colon-separated parameter (ITU T.416): `38:5:n`, `38:2:[space]:r:g:b`, `4:3`."""
        if sub[0] in (38, 48, 58) and sub[1:2] == [2] and len(sub) >= 5:
            rgb = sub[-3:] if len(sub) >= 6 else sub[2:5]
            self._colour(sub[0], nearest16(rgb[0], rgb[1], rgb[2]))
        elif sub[0] in (38, 48, 58) and sub[1:2] == [5] and len(sub) >= 3:
            self._colour(sub[0], to16(sub[2]))
        elif sub[0] == 4:  # underline styles: 4:0 off, anything else on
            self.underline = len(sub) < 2 or sub[1] != 0

    def _colour(self, code: int, colour: int | None) -> None:
        if colour is None:
            return  # out of range: the colour stays as it was
        if code == 38:
            self.fg = colour
        elif code == 48:
            self.bg = colour


def _number(text: str) -> int:
    """An SGR parameter; empty or malformed counts as 0 (as terminals read it)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 8 else 0


GREY_SPREAD = 40  # a colour whose channels differ by less than this is a grey
BRIGHT_FROM = 230  # strongest channel: xterm's basic colours use 205, the bright ones 255
_GREY_LEVELS = ((0, 0), (8, 127), (7, 229), (15, 255))  # (colour, xterm's level)


def nearest16(red: int, green: int, blue: int) -> int | None:
    """The basic colour (0-15) a 24-bit colour is shown as; None when out of range.

    Greys (channels within GREY_SPREAD) become black, bright black, white or bright white,
    whichever level is nearest their mean. Other colours keep their hue: the nearest of the six
    hues red 0°, yellow 60°, green 120°, cyan 180°, blue 240°, magenta 300° (HSV hue angle),
    bright when the strongest channel is at least BRIGHT_FROM. So orange is yellow, pink is
    bright red and a muted teal is cyan, never grey."""
    if not all(0 <= c <= 255 for c in (red, green, blue)):
        return None
    top, bottom = max(red, green, blue), min(red, green, blue)
    spread = top - bottom
    if spread < GREY_SPREAD:
        mean = (red + green + blue) / 3
        return min(_GREY_LEVELS, key=lambda entry: abs(entry[1] - mean))[0]
    if top == red:
        hue = (60 * (green - blue) / spread) % 360
    elif top == green:
        hue = 60 * (blue - red) / spread + 120
    else:
        hue = 60 * (red - green) / spread + 240
    sextant = int(hue / 60 + 0.5) % 6  # 0 red, 1 yellow, 2 green, 3 cyan, 4 blue, 5 magenta
    base = (1, 3, 2, 6, 4, 5)[sextant]
    return base + (8 if top >= BRIGHT_FROM else 0)


def to16(colour: int) -> int | None:
    """A 256-palette colour as the nearest of the 16 basic ones (the page styles only those)."""
    if colour < 16:
        return colour
    if colour > 255:
        return None
    if colour >= 232:  # the grey ramp
        level = colour - 232
        return 0 if level < 6 else 8 if level < 12 else 7 if level < 20 else 15
    red, rest = divmod(colour - 16, 36)
    green, blue = divmod(rest, 6)
    bits = (1 if red >= 3 else 0) | (2 if green >= 3 else 0) | (4 if blue >= 3 else 0)
    bright = max(red, green, blue) >= 4
    return bits + (8 if bright else 0)


@dataclass
class AnsiHtml:
    """Incremental converter. Not thread-safe: one per rendered log.

    `at_line_start` is True when the next character begins a line (a fresh log, or a window
    that starts on a line boundary)."""

    at_line_start: bool = True
    style: Style = field(default_factory=Style)
    _pending: str = ""
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def feed(self, data: bytes, at: datetime | None = None) -> str:
        """HTML for the next bytes of the log, written at `at` (the line timestamps)."""
        text = self._pending + self._decoder.decode(data)
        self._pending = ""
        last = text.rfind("\x1b", max(0, len(text) - _PARTIAL_LIMIT))
        if last >= 0 and _ESCAPE.match(text, last) is None and _may_continue(text[last:]):
            self._pending = text[last:]  # an escape sequence cut by the chunk boundary
            text = text[:last]
        return self._render(text, at)

    def finish(self) -> str:
        """Whatever is left at the end (a final half sequence is dropped), closing open spans."""
        tail = self._decoder.decode(b"", final=True)
        self._pending = ""
        return self._render(tail, None)

    def _render(self, text: str, at: datetime | None) -> str:
        out: list[str] = []
        stamp = _stamp(at)
        position = 0
        for match in _ESCAPE.finditer(text):
            self._text(text[position : match.start()], stamp, out)
            if match.group(2) == "m":
                self.style.apply(match.group(1) or "")
            position = match.end()
        self._text(text[position:], stamp, out)
        return "".join(out)

    def _text(self, text: str, stamp: str, out: list[str]) -> None:
        if not text:
            return
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = _CONTROLS.sub("", text)
        classes = self.style.classes()
        pieces = text.split("\n")
        for number, piece in enumerate(pieces):
            last = number == len(pieces) - 1
            if piece:
                if self.at_line_start:
                    out.append(stamp)
                    self.at_line_start = False
                body = escape(piece, quote=False)
                out.append(f'<span class="{classes}">{body}</span>' if classes else body)
            if not last:
                if self.at_line_start:
                    out.append(stamp)  # an empty line still gets its time
                out.append("\n")
                self.at_line_start = True


def _may_continue(tail: str) -> bool:
    """Whether `tail` (starting with ESC) could still become a complete escape sequence."""
    if len(tail) == 1:
        return True
    if tail[1] == "[":
        return re.fullmatch(r"\x1b\[[0-?]*[ -/]*", tail) is not None
    return tail[1] == "]" and "\x07" not in tail


def _stamp(at: datetime | None) -> str:
    if at is None:
        return ""
    label = at.strftime("%H:%M:%S.") + f"{at.microsecond // 1000:03d}"
    return f'<span class="ts" data-t="{at.isoformat()}">{label} </span>'


def render(data: bytes, at: datetime | None = None) -> str:
    """HTML of a whole piece of output at once."""
    converter = AnsiHtml()
    return converter.feed(data, at) + converter.finish()
