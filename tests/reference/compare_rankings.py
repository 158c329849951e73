#!/usr/bin/python3
"""Compares two rankings TSVs (user<TAB>rank<TAB>code<TAB>score) of the same
users: equal top-K lists up to ties within TOL.

Every code of B is in A's list of that user with the same score within TOL,
or scores within TOL of A's last score (a tie at the cut); both lists have
the same length; where the orders differ, the scores at that rank agree
within TOL. Prints the number of users, ranks and reordered ranks.

usage: compare_rankings.py A.tsv B.tsv TOL
"""
import sys


def load(path):
    out = {}
    for n, line in enumerate(open(path), 1):
        f = line.rstrip("\n").split("\t")
        if len(f) != 4:
            sys.exit(f"{path}:{n}: expected 4 fields, got {len(f)}")
        out.setdefault(int(f[0]), []).append((f[2], float(f[3])))
    return out


def main():
    a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
    if sorted(a) != sorted(b):
        sys.exit(f"different users: {len(a)} vs {len(b)}")
    ranks = moved = 0
    for u in a:
        la, lb = a[u], b[u]
        if len(la) != len(lb):
            sys.exit(f"user {u}: {len(la)} vs {len(lb)} codes")
        sa = dict(la)
        for i, (code, score) in enumerate(lb):
            ranks += 1
            if code in sa:
                if abs(sa[code] - score) > tol:
                    sys.exit(f"user {u} code {code}: score {sa[code]} vs {score}")
            elif score > la[-1][1] + tol:
                sys.exit(f"user {u}: {code} (score {score}) is not in the first list, whose last score is {la[-1][1]}")
            if la[i][0] != code:
                moved += 1
                if abs(la[i][1] - score) > tol:
                    sys.exit(f"user {u} rank {i + 1}: {la[i]} vs {(code, score)}")
    print(f"{len(a)} users, {ranks} ranks, {moved} reordered among ties (tol {tol})")


main()
