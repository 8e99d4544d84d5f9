#!/usr/bin/env python3
"""Prints the scikit-learn values that metrics_test.cc checks against.

The data are made by formulas that metrics_test.cc repeats in C++ (no RNG, so
both sides see the same numbers). Run with scikit-learn installed
(Debian: python3-sklearn); the output was pasted into metrics_test.cc.
"""
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, precision_score, recall_score,
                             roc_auc_score)


def multiclass_case():
    # 6 classes: class 4 has samples but is never predicted (its column is
    # always lowest); class 5 is predicted but has no samples.
    n, c = 200, 6
    scores, targets = [], []
    for i in range(n):
        row = [((i * i * 31 + k * 17 + i * k * 7) % 23) / 8.0 for k in range(c)]
        row[4] = -1.0
        scores.append(row)
        targets.append((i * 13 + i // 5) % 5)
    return scores, targets


def argmax(row):
    best = 0
    for k in range(1, len(row)):
        if row[k] > row[best]:
            best = k
    return best


def binary_case():
    # Scores with many ties (multiples of 1/16 in [0, 1)).
    n = 300
    scores = [((i * i * 13 + i * 5) % 16) / 16.0 for i in range(n)]
    targets = [1 if (i * 7 + i * i) % 3 == 0 else 0 for i in range(n)]
    return scores, targets


def main():
    scores, y = multiclass_case()
    pred = [argmax(r) for r in scores]
    print("multiclass")
    print("  accuracy ", repr(accuracy_score(y, pred)))
    print("  precision", repr(precision_score(y, pred, average="macro", zero_division=0)))
    print("  recall   ", repr(recall_score(y, pred, average="macro", zero_division=0)))
    print("  f1       ", repr(f1_score(y, pred, average="macro", zero_division=0)))
    print("  confusion", confusion_matrix(y, pred, labels=list(range(6))).tolist())

    s, y = binary_case()
    pred = [1 if v > 0.5 else 0 for v in s]
    print("binary")
    print("  roc_auc  ", repr(roc_auc_score(y, s)))
    print("  accuracy ", repr(accuracy_score(y, pred)))
    print("  precision", repr(precision_score(y, pred, average="macro", zero_division=0)))
    print("  recall   ", repr(recall_score(y, pred, average="macro", zero_division=0)))
    print("  f1       ", repr(f1_score(y, pred, average="macro", zero_division=0)))
    print("  confusion", confusion_matrix(y, pred).tolist())

    # The small hand-checked cases of metrics_test.cc.
    print("hand cases")
    print("  auc ties ", repr(roc_auc_score([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.4, 0.8, 0.8, 0.8])))
    yt, yp = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 0]
    print("  3-class no-pred precision", repr(precision_score(yt, yp, average="macro", zero_division=0)))
    print("  3-class no-pred recall   ", repr(recall_score(yt, yp, average="macro", zero_division=0)))
    print("  3-class no-pred f1       ", repr(f1_score(yt, yp, average="macro", zero_division=0)))


if __name__ == "__main__":
    main()
