"""Sandbox worker, part 1 of 7 (bundled by _pool.worker_source): the frames on the pipes and
the notebook-cell semantics of a child: shared namespace, outputs, Jupyter-style tracebacks."""

import ast
import codeop
import io
import json
import linecache
import os
import struct
import sys
import tokenize
import traceback

HEADER = struct.Struct(">I")
MAX_FRAME = 64 << 20  # a request holds one solution's code; anything bigger is a broken peer
CONTROL_FD = 3  # the child's end of the per-block result pipe
MEMORY_POLL = 0.1  # seconds between checks of the sandbox's total memory
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
ACK_FD = 4  # the worker's go-ahead for the next block, so each block's output stays its own
DASHES = "-" * 75
EXIT_HINT = "An exception has occurred, use %tb to see the full traceback.\n"
# How IPython parses a cell (codeop's flags): an unclosed bracket is "incomplete input".
PARSE_FLAGS = (
    ast.PyCF_ONLY_AST
    | getattr(codeop, "PyCF_DONT_IMPLY_DEDENT", 0)
    | getattr(codeop, "PyCF_ALLOW_INCOMPLETE_INPUT", 0)
)
SELF = globals().get("__file__", "<string>")  # our own frames are hidden from tracebacks


# ---------------------------------------------------------------- framing (both sides of pipes)


def read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame(fd: int):
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    body = read_exact(fd, size)
    if body is None:
        return None
    return json.loads(body)


def write_frame(fd: int, obj) -> None:
    body = json.dumps(obj).encode()
    data = HEADER.pack(len(body)) + body
    while data:
        data = data[os.write(fd, data) :]


# ---------------------------------------------------------------- child: notebook-cell semantics


def is_quiet(src: str) -> bool:
    """IPython hides the value of a cell whose last token is ';'."""
    last = None
    skip = {tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type not in skip and tok.type not in (tokenize.INDENT, tokenize.DEDENT):
                last = tok
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


def format_value(value) -> str:
    """Jupyter's text/plain: IPython's pretty printer where available, else repr."""
    pretty = sys.modules.get("IPython.lib.pretty")
    if pretty is not None:
        return pretty.pretty(value, max_width=79, max_seq_length=1000)
    return repr(value)


def cell_name(filename: str) -> str | None:
    if filename.startswith("<cell ") and filename.endswith(">"):
        return f"Cell In[{filename[6:-1]}]"
    return None


def format_frame(frame: traceback.FrameSummary) -> str:
    where = cell_name(frame.filename) or f"File {frame.filename}"
    head = f"{where}, line {frame.lineno}"
    if frame.name != "<module>":
        head += f", in {frame.name}"
    lines = linecache.getlines(frame.filename)
    lo = max(frame.lineno - 3, 0)
    body = []
    for no in range(lo + 1, min(frame.lineno, len(lines)) + 1):
        mark = "---->" if no == frame.lineno else "     "
        body.append(f"{mark} {no} {lines[no - 1].rstrip()}")
    return "\n".join([head, *body]) + "\n"


def collapse(frames: list[traceback.FrameSummary]) -> list[str]:
    """Render frames, folding runs of one recursive frame so the error line stays in view."""
    out: list[str] = []
    i = 0
    while i < len(frames):
        j = i
        key = (frames[i].filename, frames[i].lineno, frames[i].name)
        while (
            j + 1 < len(frames)
            and (frames[j + 1].filename, frames[j + 1].lineno, frames[j + 1].name) == key
        ):
            j += 1
        out.append(format_frame(frames[i]))
        if j - i >= 3:
            out.append(
                f"    [... skipping similar frames: {key[2]} at line {key[1]} ({j - i - 1} times)]"
            )
            out.append(format_frame(frames[j]))
        else:
            out.extend(format_frame(f) for f in frames[i + 1 : j + 1])
        i = j + 1
    return out


def format_error(exc: BaseException) -> tuple[str, str]:
    """The traceback text a Jupyter client shows (its traceback entries joined by newlines),
    and its last part: `ErrorName: message`, which may span several lines."""
    name = type(exc).__name__
    if isinstance(exc, SystemExit):
        tail = traceback.format_exception_only(exc)[-1].rstrip("\n")
        return EXIT_HINT + "\n" + tail + "\n", tail
    if isinstance(exc, SyntaxError):
        text = "".join(traceback.format_exception_only(exc))
        cell = cell_name(exc.filename or "")
        text = text.replace(f'File "{exc.filename}"', cell) if cell else text
        return text, text.rstrip("\n").rsplit("\n", 1)[-1]
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != SELF]
    parts = [DASHES, f"{name:<42}Traceback (most recent call last)", *collapse(frames)]
    tail = f"{name}: {safe_str(exc)}"
    return "\n".join(parts) + "\n" + tail, tail


def safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - the model's own exception class may fail in __str__
        return "<exception str() failed>"


def run_cell(src: str, ns: dict, number: int) -> tuple[str, str]:
    """Execute one block in `ns`; return the displayed value or the error text, and for an
    error its last part (`ErrorName: message`; "" when there was no error)."""
    filename = f"<cell {number}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    try:
        tree = compile(src, filename, "exec", PARSE_FLAGS, dont_inherit=True)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), ns)
        if last is None:
            return "", ""
        value = eval(compile(last, filename, "eval"), ns)
        if value is None or is_quiet(src):
            return "", ""
        ns["_"] = value
        return format_value(value), ""
    except BaseException as exc:  # noqa: B036 - SystemExit/KeyboardInterrupt are cell errors too
        try:
            return format_error(exc)
        except BaseException as inner:  # noqa: B036 - e.g. a traceback too deep to format
            text = f"{type(exc).__name__}: <traceback could not be formatted: {inner!r}>"
            return text, text
