#!/usr/bin/env python3
"""Where a wasm's code goes: bytes of function bodies per crate, and the largest functions.

    python3 scripts/wasm_size.py FILE.wasm [--crates 30] [--functions 0]

FILE is a module with its name section, as cargo writes it (for the browser app,
$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/worker.wasm or .../page/app.wasm; dist/ has the
names stripped). A function counts for the crate its mangled name starts with: for a trait method
that is the implementing type's crate; generic code counts where it was named, so `core` and
`alloc` hold what other crates instantiated. Standard library only.
"""
import argparse
import collections
import re


def leb(b, i):
    """An unsigned LEB128 at b[i]: (value, index after it)."""
    value = shift = 0
    while True:
        x = b[i]
        i += 1
        value |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return value, i


def read(path):
    """(imported function count, body sizes in order, {function index: name})."""
    data = open(path, "rb").read()
    if data[:4] != b"\0asm":
        raise SystemExit(f"{path}: not a wasm module")
    i, imported, bodies, names = 8, 0, [], {}
    while i < len(data):
        sid = data[i]
        size, i = leb(data, i + 1)
        end = i + size
        if sid == 2:  # imports: only functions shift the index space
            n, j = leb(data, i)
            for _ in range(n):
                for _ in range(2):  # module, field
                    length, j = leb(data, j)
                    j += length
                kind = data[j]
                j += 1
                if kind == 0:  # function: type index
                    _, j = leb(data, j)
                    imported += 1
                elif kind == 1:  # table: reftype, limits
                    flags, j = leb(data, j + 1)
                    _, j = leb(data, j)
                    if flags & 1:
                        _, j = leb(data, j)
                elif kind == 2:  # memory: limits
                    flags, j = leb(data, j)
                    _, j = leb(data, j)
                    if flags & 1:
                        _, j = leb(data, j)
                elif kind == 3:  # global: valtype, mutability
                    j += 2
                else:  # tag
                    _, j = leb(data, j + 1)
        elif sid == 10:  # code
            n, j = leb(data, i)
            for _ in range(n):
                length, k = leb(data, j)
                bodies.append(length + (k - j))
                j = k + length
        elif sid == 0:  # custom: the name section's function names
            length, j = leb(data, i)
            if data[j : j + length] == b"name":
                j += length
                while j < end:
                    sub = data[j]
                    sub_size, j = leb(data, j + 1)
                    if sub == 1:
                        n, k = leb(data, j)
                        for _ in range(n):
                            idx, k = leb(data, k)
                            length, k = leb(data, k)
                            names[idx] = data[k : k + length].decode("utf-8", "replace")
                            k += length
                    j += sub_size
        i = end
    return imported, bodies, names


def crate_of(name):
    """The crate a mangled Rust name belongs to (legacy `_ZN` or v0 `_R`), else its first word."""
    if name.startswith("_ZN"):
        m = re.match(r"_ZN(\d+)", name)
        length = int(m.group(1))
        first = name[m.end() : m.end() + length]
        if first.startswith("_$LT$"):  # <Type as Trait>::method
            first = re.sub(r"^(\$RF\$|mut\$u20\$)+", "", first[5:])
            first = re.split(r"\.\.|\$", first)[0]
        return first
    m = re.search(r"Cs[0-9A-Za-z]+_(\d+)", name)
    if name.startswith("_R") and m:
        length = int(m.group(1))
        return name[m.end() : m.end() + length]
    return re.split(r"[:.$<]", name)[0] or name[:40]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("wasm")
    ap.add_argument("--crates", type=int, default=30, help="how many crates to list")
    ap.add_argument("--functions", type=int, default=0, help="how many of the largest functions to list")
    a = ap.parse_args()
    imported, bodies, names = read(a.wasm)
    if not names:
        raise SystemExit(f"{a.wasm} has no function names: use the module cargo wrote, not dist/'s")
    per_crate = collections.Counter()
    for k, size in enumerate(bodies):
        per_crate[crate_of(names.get(imported + k, "?"))] += size
    print(f"code: {sum(bodies) / 1e6:.2f} MB in {len(bodies)} functions")
    for crate, size in per_crate.most_common(a.crates):
        print(f"{size / 1e3:10.1f} KB  {crate}")
    largest = sorted(((size, names.get(imported + k, "?")) for k, size in enumerate(bodies)), reverse=True)
    for size, name in largest[: a.functions]:
        print(f"{size / 1e3:10.1f} KB  {name[:160]}")


if __name__ == "__main__":
    main()
