#!/usr/bin/env python3
"""Run the SQL and shell examples of README.md and docs/*.md (test tier `docs`).

Usage: scripts/doctest.py [--list] [-v] [FILE.md ...]   (default: README.md docs/*.md)
  --list  the marked blocks, nothing run;  -v  print every block's stdout

How a Markdown file marks its examples (the first word of a fence's info string is the language,
so GitHub renders every block as usual):

    ```sql runnable            run with psql -X -q -v ON_ERROR_STOP=1 (footer off, PGTZ=UTC)
    ```sh runnable             run with bash -euo pipefail
    ```sh skip: <reason>       not run; counted and reported with its reason (required)
    ```output                  right after a runnable block: its expected stdout
    ```output varies           shown to the reader, not compared (the block must still succeed)

A `sql`, `sh`, `bash`, `shell` or `console` block without one of these markers is an error, so a
new example cannot go untested by accident. Expected output is compared line by line with runs
of whitespace collapsed, blank lines dropped and psql's `---+---` rules shortened; `...` inside
a line matches any text, a line of only `...` any number of lines.

Every file gets its own scratch database `doctest_<pid>_<file>`, a copy of one that has the
extension, the flight simulator's demo scenario (ending now, as `make demo` loads it:
sql/demo_start.sql) and one `coherence.run_detection()`. The blocks of a file run in order
against it, so later blocks see what earlier ones did. SQL blocks connect with the libpq
variables of `scripts/pg.sh env` (the local cluster, or $DATABASE_URL's server). Shell blocks run
in a temporary directory that mirrors the repository's top level (symlinks), with
DATABASE_URL = the file's scratch database, the ingestor's directory first in PATH
($COHERENCE_DOCTEST_BIN, default target/release) and COHERENCE_SHARD_ROOT in the temporary
directory; processes a block leaves running are killed when it ends. Databases are dropped at
the end (DOCTEST_KEEP=1 keeps them).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_LANGS = {"sql", "sh"}
CHECKED_LANGS = {"sql", "sh", "bash", "shell", "console", "psql"}
SQL_TIMEOUT = 300
SH_TIMEOUT = 600
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")


class Block:
    def __init__(self, path, line, lang, marker, arg, text):
        self.path, self.line, self.lang, self.marker, self.arg, self.text = path, line, lang, marker, arg, text
        self.expected = None  # text of the following ```output block
        self.output_varies = False

    def where(self):
        return f"{os.path.relpath(self.path, ROOT)}:{self.line}"


def parse(path):
    """Fenced blocks of a Markdown file, with their markers; errors for unmarked examples."""
    lines = open(path, encoding="utf-8").read().split("\n")
    blocks, errors = [], []
    i = 0
    prev = None  # the last runnable/skipped block, while only blank lines follow it
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                prev = None
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3).strip()
        body = []
        j = i + 1
        while j < len(lines):
            c = FENCE.match(lines[j])
            if c and c.group(2)[0] == fence[0] and len(c.group(2)) >= len(fence) and not c.group(3).strip():
                break
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        if j == len(lines):
            errors.append(f"{os.path.relpath(path, ROOT)}:{i + 1}: unterminated code block")
            break
        text = "\n".join(body) + "\n"
        words = info.split(None, 1)
        lang = words[0].lower() if words else ""
        rest = words[1].strip() if len(words) > 1 else ""
        where = f"{os.path.relpath(path, ROOT)}:{i + 1}"
        if lang == "output":
            if prev is None:
                errors.append(f"{where}: an ```output block must follow a runnable or skipped example")
            elif rest not in ("", "varies"):
                errors.append(f"{where}: unknown output marker '{rest}' (use ```output or ```output varies)")
            else:
                prev.expected = text
                prev.output_varies = rest == "varies"
            prev = None
        elif lang in CHECKED_LANGS:
            if rest == "runnable":
                if lang not in RUN_LANGS:
                    errors.append(f"{where}: only sql and sh blocks can be runnable (got '{lang}')")
                b = Block(path, i + 1, lang, "run", None, text)
            elif rest.startswith("skip:") and rest[5:].strip():
                b = Block(path, i + 1, lang, "skip", rest[5:].strip(), text)
            else:
                errors.append(f"{where}: a ```{lang} block needs 'runnable' or 'skip: <reason>' "
                              f"in its info string (got '{info}')")
                b = None
            if b:
                blocks.append(b)
            prev = b
        else:
            prev = None
        i = j + 1
    return blocks, errors


def normalise(text):
    out = []
    for line in text.split("\n"):
        line = " ".join(line.split())
        if not line:
            continue
        if re.fullmatch(r"[-+ ]+", line) and "-" in line:
            line = "---"
        out.append(line)
    return out


def matches(expected, actual):
    exp, act = normalise(expected), normalise(actual)
    pattern = ""
    for line in exp:
        if line == "...":
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += "[^\n]*".join(re.escape(p) for p in line.split("...")) + "\n"
    return re.fullmatch(pattern, "".join(l + "\n" for l in act)) is not None


def pg_env():
    """libpq variables of the local cluster or of $DATABASE_URL's server (scripts/pg.sh env)."""
    out = subprocess.run([os.path.join(ROOT, "scripts/pg.sh"), "env"], check=True, text=True,
                         capture_output=True).stdout
    env = {}
    for m in re.finditer(r"(\w+)=('[^']*'|\S+)", out):
        env[m.group(1)] = m.group(2).strip("'")
    return env


class Db:
    def __init__(self):
        subprocess.run([os.path.join(ROOT, "scripts/pg.sh"), "start"], check=True, capture_output=True)
        self.libpq = pg_env()
        # Not the environment of an enclosing make (make test): a `make` in an example would
        # print "Entering directory" lines that its shown output does not have.
        base = {k: v for k, v in os.environ.items()
                if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
        self.env = dict(base, **self.libpq, PGTZ="UTC", PAGER="cat", PSQL_PAGER="cat")
        self.env.pop("PGDATABASE", None)
        self.env.pop("DATABASE_URL", None)
        self.created = []

    def conninfo(self, db):
        parts = []
        for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"),
                         ("password", "PGPASSWORD"), ("sslmode", "PGSSLMODE")):
            if var in self.libpq:
                parts.append(f"{key}={self.libpq[var]}")
        return " ".join(parts + [f"dbname={db}"])

    def psql(self, db, sql, timeout=SQL_TIMEOUT, extra=()):
        return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-P", "footer=off", *extra, "-d", db],
                              input=sql, text=True, capture_output=True, env=self.env, timeout=timeout)

    def admin(self, sql):
        r = self.psql("postgres", "SET client_min_messages = warning;\n" + sql)
        if r.returncode != 0:
            raise RuntimeError(f"doctest: {sql.strip()} failed: {r.stderr.strip()}")

    def create(self, name, template=None):
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\n"
                   f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else "") + ";")
        self.created.append(name)

    def drop_all(self):
        for name in reversed(self.created):
            try:
                self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")
            except RuntimeError as e:
                print(e, file=sys.stderr)


def build_demo(db, name, bindir):
    """The template: extension, the demo scenario ending now, one run_detection()."""
    t = time.time()
    db.create(name)
    r = db.psql(name, "SET client_min_messages = warning; CREATE EXTENSION coherence;")
    if r.returncode != 0:
        sys.exit(f"doctest: CREATE EXTENSION coherence failed (is it installed? make install): {r.stderr.strip()}")
    r = db.psql(name, open(os.path.join(ROOT, "sql/demo_start.sql")).read(), extra=("-tA",))
    start = r.stdout.strip()
    if r.returncode != 0 or not start:
        sys.exit(f"doctest: sql/demo_start.sql failed: {r.stderr.strip()}")
    ingest = os.path.join(bindir, "coherence-ingest")
    r = subprocess.run([ingest, "simulate", "--start", start], env=dict(db.env, DATABASE_URL=db.conninfo(name)),
                       text=True, capture_output=True)
    if r.returncode != 0:
        sys.exit(f"doctest: {ingest} simulate --start {start} failed: {r.stderr.strip()}")
    r = db.psql(name, "SELECT coherence.run_detection();")
    if r.returncode != 0:
        sys.exit(f"doctest: run_detection() on the demo data failed: {r.stderr.strip()}")
    print(f"doctest: demo database {name}: scenario from {start}, loaded in {time.time() - t:.1f}s")


def mirror(tmp):
    """A working directory with the repository's top level as symlinks (files a block writes stay here)."""
    work = os.path.join(tmp, "work")
    os.makedirs(work)
    for entry in os.listdir(ROOT):
        if entry != ".git":
            os.symlink(os.path.join(ROOT, entry), os.path.join(work, entry))
    return work


def run_sh(block, env, cwd):
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(block.text)
        script = f.name
    p = subprocess.Popen(["bash", "-euo", "pipefail", script], cwd=cwd, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=SH_TIMEOUT)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc, err = -1, err + f"\n(timed out after {SH_TIMEOUT}s)"
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)  # what the block left running in the background
        except ProcessLookupError:
            pass
        os.unlink(script)
    return rc, out, err


def main(argv):
    list_only = "--list" in argv
    verbose = "-v" in argv
    files = [a for a in argv if a not in ("--list", "-v")] or \
        ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
    files = [f if os.path.isabs(f) else os.path.join(ROOT, f) for f in files]
    parsed, errors = [], []
    for f in files:
        b, e = parse(f)
        parsed.append((f, b))
        errors += e
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(f"doctest: {len(errors)} unmarked or malformed example(s)")
    if list_only:
        for f, blocks in parsed:
            for b in blocks:
                print(f"{b.where()}: {b.lang} {b.marker}" + (f" ({b.arg})" if b.arg else "")
                      + (" + output" if b.expected is not None and not b.output_varies else ""))
        return 0

    bindir = os.path.abspath(os.environ.get("COHERENCE_DOCTEST_BIN", os.path.join(ROOT, "target/release")))
    if not os.access(os.path.join(bindir, "coherence-ingest"), os.X_OK):
        sys.exit(f"doctest: no coherence-ingest in {bindir} (make build, or set COHERENCE_DOCTEST_BIN)")
    t0 = time.time()
    db = Db()
    tag = f"doctest_{os.getpid()}"
    template = f"{tag}_demo"
    tmp = tempfile.mkdtemp(prefix="coherence-doctest-")
    os.chmod(tmp, 0o755)  # the postgres user runs clusters a block starts under it (scripts/shard.sh)
    passed, skipped, failed, compared = 0, [], [], 0
    try:
        build_demo(db, template, bindir)
        work = mirror(tmp)
        for f, blocks in parsed:
            if not blocks:
                continue
            stem = re.sub(r"[^a-z0-9]+", "_", os.path.splitext(os.path.basename(f))[0].lower())
            name = f"{tag}_{stem}"
            db.create(name, template)
            sh_env = dict(db.env, DATABASE_URL=db.conninfo(name), PGDATABASE=name,
                          PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
                          COHERENCE_SHARD_ROOT=os.path.join(tmp, "shard"), TMPDIR=tmp)
            for b in blocks:
                if b.marker == "skip":
                    skipped.append(b)
                    print(f"skip {b.where()} ({b.lang}): {b.arg}")
                    continue
                t = time.time()
                if b.lang == "sql":
                    try:
                        r = db.psql(name, b.text)
                        rc, out, err = r.returncode, r.stdout, r.stderr
                    except subprocess.TimeoutExpired:
                        rc, out, err = -1, "", f"timed out after {SQL_TIMEOUT}s"
                else:
                    rc, out, err = run_sh(b, sh_env, work)
                why = None
                if rc != 0:
                    why = f"exit status {rc}"
                elif b.expected is not None and not b.output_varies:
                    compared += 1
                    if not matches(b.expected, out):
                        why = "output differs"
                if why:
                    failed.append(b)
                    print(f"FAIL {b.where()} ({b.lang}): {why}")
                    print("  --- example:\n" + indent(b.text))
                    if why == "output differs":
                        print("  --- expected:\n" + indent(b.expected))
                    print("  --- stdout:\n" + indent(out) + "  --- stderr:\n" + indent(err))
                else:
                    passed += 1
                    print(f"ok   {b.where()} ({b.lang}, {time.time() - t:.1f}s)")
                    if verbose:
                        print(indent(out), end="")
            if os.path.isdir(os.path.join(tmp, "shard")):
                subprocess.run([os.path.join(ROOT, "scripts/shard.sh"), "destroy"], capture_output=True,
                               env=dict(os.environ, COHERENCE_SHARD_ROOT=os.path.join(tmp, "shard")))
    finally:
        if os.environ.get("DOCTEST_KEEP") != "1":
            db.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    reasons = {}
    for b in skipped:
        reasons.setdefault(b.arg, []).append(b.where())
    for r, where in reasons.items():
        print(f"skipped {len(where)}: {r} ({', '.join(where)})")
    summary = (f"{passed} doc examples passed ({compared} outputs compared), {len(skipped)} skipped, "
               f"{len(failed)} failed, in {time.time() - t0:.0f}s")
    if failed:
        print(f"doctest: FAILED: {summary}", file=sys.stderr)
        return 1
    if passed == 0:
        print("doctest: no runnable examples found", file=sys.stderr)
        return 1
    print(f"All {passed} doc examples passed ({compared} outputs compared; {len(skipped)} skipped; "
          f"{time.time() - t0:.0f}s)")
    return 0


def indent(text):
    return "".join("    " + l + "\n" for l in text.rstrip("\n").split("\n")) if text.strip() else "    (empty)\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
