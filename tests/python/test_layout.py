"""What the package mirrors of the C headers matches them exactly: a C
program compiled against include/ prints the size, alignment and offset of
every field of every mirrored struct, every result code of MAE_ERRNO_MAP
and every MAE_SOURCE_* tag, and each must equal what the package holds.
A field added to, removed from or moved in a header, a code or a tag added
or changed, fails here. The run-time half (the size handshake at import)
is checked at the end."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import mailagent_events
from conftest import ROOT
from mailagent_events import _layout as L
from mailagent_events import _lib, errors

HEADERS = ROOT / "include" / "mailagent"


def _members(cls: type, prefix: str = "") -> List[Tuple[str, type]]:
    """(C member designator, ctypes type) of every field, nested ones too."""
    out: List[Tuple[str, type]] = []
    for name, ctype in cls._fields_:  # type: ignore[attr-defined]
        out.append((prefix + name, ctype))
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
            out.extend(_members(ctype, prefix + name + "."))
    return out


def _python_layout() -> Dict[str, object]:
    got: Dict[str, object] = {}
    for cls, cname in L.C_NAMES.items():
        got[f"sizeof {cname}"] = ctypes.sizeof(cls)
        got[f"alignof {cname}"] = ctypes.alignment(cls)
        for member, _ in _members(cls):
            obj: type = cls
            offset = 0
            for part in member.split("."):
                field = getattr(obj, part)
                offset += field.offset
                size = field.size
                obj = dict(obj._fields_)[part]  # type: ignore[attr-defined]
            got[f"offsetof {cname}.{member}"] = offset
            got[f"sizeof {cname}.{member}"] = size
    for name in dir(errors):
        if name.startswith("MAE_"):
            got[f"code {name}"] = getattr(errors, name)
    for name in dir(mailagent_events):
        if name.startswith("SOURCE_"):
            got[f"tag MAE_{name}"] = getattr(mailagent_events, name)
    return got


def _source_tag_names() -> List[str]:
    """Every MAE_SOURCE_* macro common.h defines."""
    text = (HEADERS / "common.h").read_text()
    return re.findall(r"^#define (MAE_SOURCE_\w+) ", text, re.M)


def _c_program() -> str:
    lines = [
        "#include <stdalign.h>",
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <mailagent/events.h>",
        "int main(void) {",
        # every code of the table, from the table itself: none can be missed
        '#define P(name, value, text) printf("code MAE_" #name " %d\\n", MAE_##name);',
        "    MAE_ERRNO_MAP(P)",
        "#undef P",
    ]
    for name in _source_tag_names():
        lines.append(f'    printf("tag {name} %s\\n", {name});')
    for cls, cname in L.C_NAMES.items():
        lines.append(f'    printf("sizeof {cname} %zu\\n", sizeof({cname}));')
        lines.append(f'    printf("alignof {cname} %zu\\n", (size_t)alignof({cname}));')
        for member, _ in _members(cls):
            lines.append(
                f'    printf("offsetof {cname}.{member} %zu\\n", offsetof({cname}, {member}));'
            )
            lines.append(
                f'    printf("sizeof {cname}.{member} %zu\\n", sizeof((({cname} *)0)->{member}));'
            )
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


def test_every_mirrored_struct_matches_the_headers(tmp_path: Path) -> None:
    cc = shutil.which("cc")
    assert cc, "a C compiler (cc) is needed to check the struct layouts"
    src = tmp_path / "layout.c"
    src.write_text(_c_program())
    exe = tmp_path / "layout"
    build = subprocess.run(
        [cc, "-std=c11", "-Wall", "-I", str(ROOT / "include"), str(src), "-o", str(exe)],
        capture_output=True, text=True,
    )
    # A member this package mirrors that the header no longer has fails to compile.
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    c_layout: Dict[str, object] = {}
    for line in out.splitlines():
        key, value = line.rsplit(" ", 1)
        c_layout[key] = value if key.startswith("tag ") else int(value)
    py_layout = _python_layout()
    assert len(c_layout) > 300  # 16 structs, 9 codes, 8 tags: the program printed them all
    assert {k for k in c_layout if k.startswith("code ")} == {
        k for k in py_layout if k.startswith("code ")}, "errors.py mirrors other codes"
    assert {k for k in c_layout if k.startswith("tag ")} == {
        k for k in py_layout if k.startswith("tag ")}, "__init__.py mirrors other source tags"
    assert set(c_layout) == set(py_layout)
    diff = {k: (py_layout[k], c_layout[k]) for k in c_layout if c_layout[k] != py_layout[k]}
    assert not diff, f"(python, C) differ; update the mirror (_layout.py, errors.py or __init__.py): {diff}"


def test_no_struct_has_slack() -> None:
    """Each mirror ends where its last field ends (plus the alignment C
    pads to): no spare bytes after any struct."""
    for cls in L.C_NAMES:
        name, ctype = cls._fields_[-1]  # type: ignore[attr-defined]
        end = getattr(cls, name).offset + ctypes.sizeof(ctype)
        align = ctypes.alignment(cls)
        assert ctypes.sizeof(cls) == (end + align - 1) // align * align, L.C_NAMES[cls]


def _declared_members(cname: str, text: str) -> set:
    """The member names of `typedef struct cname {...} cname;` in text; an
    anonymous struct member counts as its names (mailapp, notion)."""
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (cname, cname), text, re.S)
    assert body, cname
    code = re.sub(r"/\*.*?\*/|\[[^]]*\]", "", body.group(1), flags=re.S)
    code = re.sub(r"struct\s*\{[^}]*\}", "struct_anon", code)
    names = set()
    for decl in code.split(";"):
        decl = decl.strip()
        if not decl:
            continue
        m = re.search(r"\(\s*\*\s*(\w+)\s*\)", decl)  # function pointer
        if m:
            names.add(m.group(1))
            continue
        for part in decl.split(",")[1:] + [decl.split(",")[0]]:
            names.add(re.findall(r"\w+", part)[-1])
    return names


def test_every_field_of_every_struct_is_mirrored() -> None:
    """Every member each header declares is in the mirror, so a field added
    into padding (a bool after `connected`), which changes no offset and no
    size, fails here too."""
    text = "".join(p.read_text() for p in sorted(HEADERS.glob("*.h")))
    for cls, cname in L.C_NAMES.items():
        assert _declared_members(cname, text) == {n for n, _ in cls._fields_}, cname


def test_every_struct_the_package_allocates_has_a_size_handshake() -> None:
    """Each struct Python creates and passes by pointer is checked at
    import: the package allocates exactly the library's size."""
    pkg = ROOT / "bindings" / "python" / "src" / "mailagent_events"
    src = "".join(p.read_text() for p in pkg.glob("*.py") if p.name != "_layout.py")
    made = {cls for cls in L.C_NAMES if re.search(r"\bL\.%s\(\)" % cls.__name__, src)}
    assert made, "the package creates no struct?"
    assert made <= set(L.SIZE_FUNCTIONS), made - set(L.SIZE_FUNCTIONS)
    for cls, fn in L.SIZE_FUNCTIONS.items():
        assert _lib._library_size(fn) == ctypes.sizeof(cls), fn


def test_a_library_with_other_struct_sizes_is_refused() -> None:
    """The import-time handshake: a library whose mae_publisher_stats is 8
    bytes longer (a counter this package does not know) is refused with
    a message naming the struct and both sizes."""
    real = _lib._library_size
    _lib._check_sizes(real)  # the library built here passes

    def grown(fn: str) -> int:
        return real(fn) + (8 if fn == "mae_publisher_stats_size" else 0)

    size = ctypes.sizeof(L.PublisherStats)
    with pytest.raises(ImportError, match=r"mae_publisher_stats is %d bytes there, %d here"
                       % (size + 8, size)):
        _lib._check_sizes(grown)


def test_a_library_of_another_major_version_is_refused() -> None:
    _lib._check_version(mailagent_events.library_version)
    with pytest.raises(ImportError, match=r"needs libmailagent-events 2\.x, .* is 1\.0\.0"):
        _lib._check_version("1.0.0")


