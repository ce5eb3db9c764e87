"""Fail when an install changed the version of a package that was installed before it.

Usage: python .ci/no_downgrade.py BEFORE.txt AFTER.txt (two `pip freeze` outputs). New packages are fine;
a changed version (down or up) of one already there is what a SAELens user would not accept."""

import sys


def versions(path: str) -> dict[str, str]:
    out = {}
    for line in open(path):
        name, sep, version = line.strip().partition("==")
        if sep:
            out[name.lower().replace("_", "-")] = version
    return out


before, after = versions(sys.argv[1]), versions(sys.argv[2])
changed = [f"{n} {v} -> {after.get(n, 'removed')}" for n, v in sorted(before.items()) if after.get(n) != v]
added = sorted(set(after) - set(before))
print(
    f"no_downgrade: {len(before)} packages before, {len(added)} added ({', '.join(added)}), "
    f"{len(changed)} changed"
)
if changed:
    sys.exit("changed: " + "; ".join(changed))
