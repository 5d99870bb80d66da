#!/usr/bin/env python3
"""Writes the bundled ImageNet label lists (`src/labels/data/*.txt`) from the files timm ships.

    python3 scripts/make_labels.py TIMM_INFO_DIR [OUT_DIR]

TIMM_INFO_DIR is timm's `timm/data/_info/` folder (timm 1.0.31: `pip download timm==1.0.31
--no-deps` and unzip the wheel, or an installed timm's `site-packages/timm/data/_info`). OUT_DIR
defaults to `src/labels/data` (run from the repository root). Python standard library only.

A class name is the WordNet lemma list of the class's synset, as in timm's
`imagenet_synset_to_lemma.txt` (`n01440764` -> "tench, Tinca tinca"), which is what
`timm.data.ImageNetInfo(subset).index_to_description(i)` returns and what transformers' conversion
scripts put in `id2label` (`transformers/utils/imagenet_classes.py` for ImageNet-1k; the
`huggingface/label-files` `imagenet-*-id2label.json` files). Written, one name per line:

- `imagenet-1k.txt`: `imagenet_synsets.txt`, 1000 classes (ILSVRC-2012 order).
- `imagenet-21k.txt`: `imagenet21k_goog_synsets.txt`, 21 843 classes (Google's ImageNet-21k order:
  the ViT / big_vision 21k heads).

ImageNet-22k (21 841 classes, the order of `fall11` that Microsoft's BEiT heads use) is not
written: it is ImageNet-21k without indices 9205 and 15027 (the two classes fall11 lacks), which is
how transformers' BEiT conversion builds it and how `src/labels` derives it. This script checks
that the derivation gives timm's `imagenet22k_synsets.txt` exactly. (timm's
`imagenet22k_ms_synsets.txt`, 21 842 classes, is another order — FocalNet's — and not used.)

If `timm` is importable, every list is also compared with `timm.data.ImageNetInfo`'s descriptions.
The sha256 of each written file and of the derived 22k list (names joined with "\\n", plus a final
"\\n") are printed; `src/labels/mod.rs` tests pin them.
"""

import csv
import hashlib
import os
import sys

# Indices of Google's ImageNet-21k that fall11 (ImageNet-22k) lacks: n03931044, n09859684.
DROPPED_FROM_21K = (9205, 15027)

# Names transformers' ViT configs give (google/vit-base-patch16-224, utils/imagenet_classes.py).
KNOWN_1K = {
    0: "tench, Tinca tinca",
    1: "goldfish, Carassius auratus",
    281: "tabby, tabby cat",
    134: "crane",
    517: "crane",
    999: "toilet tissue, toilet paper, bathroom tissue",
}


def read_lines(path):
    with open(path, "r", encoding="utf-8") as f:
        return f.read().splitlines()


def text_of(names):
    return "".join(n + "\n" for n in names)


def check_name(name, synset):
    if not name or any(c in name for c in "\r\n") or name != name.strip():
        sys.exit(f"{synset}: unusable name {name!r}")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    info = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else os.path.join("src", "labels", "data")
    with open(os.path.join(info, "imagenet_synset_to_lemma.txt"), encoding="utf-8") as f:
        lemmas = dict(csv.reader(f.read().splitlines(), delimiter="\t"))

    def names_of(file, count):
        synsets = read_lines(os.path.join(info, file))
        if len(synsets) != count or len(set(synsets)) != count:
            sys.exit(f"{file}: {len(synsets)} synsets ({len(set(synsets))} distinct), expected {count}")
        names = [lemmas[s] for s in synsets]
        for s, n in zip(synsets, names):
            check_name(n, s)
        return synsets, names

    _, in1k = names_of("imagenet_synsets.txt", 1000)
    goog, in21k = names_of("imagenet21k_goog_synsets.txt", 21843)
    fall11, in22k = names_of("imagenet22k_synsets.txt", 21841)
    for i, want in KNOWN_1K.items():
        if in1k[i] != want:
            sys.exit(f"imagenet-1k index {i}: {in1k[i]!r}, transformers has {want!r}")
    derived = [s for i, s in enumerate(goog) if i not in DROPPED_FROM_21K]
    if derived != fall11:
        sys.exit("ImageNet-21k without 9205 and 15027 is not timm's imagenet22k_synsets.txt")
    derived_names = [n for i, n in enumerate(in21k) if i not in DROPPED_FROM_21K]
    assert derived_names == in22k

    try:
        from timm.data import ImageNetInfo
    except ImportError:
        print("timm not importable: ImageNetInfo comparison skipped")
    else:
        for subset, names in (("imagenet-1k", in1k), ("imagenet-21k-goog", in21k), ("imagenet-22k", in22k)):
            if ImageNetInfo(subset).label_descriptions() != names:
                sys.exit(f"{subset}: differs from timm ImageNetInfo")
            print(f"{subset}: equal to timm.data.ImageNetInfo({subset!r}).label_descriptions()")

    os.makedirs(out, exist_ok=True)
    for file, names in (("imagenet-1k.txt", in1k), ("imagenet-21k.txt", in21k)):
        data = text_of(names).encode("utf-8")
        with open(os.path.join(out, file), "wb") as f:
            f.write(data)
        print(f"{file}: {len(names)} names, {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    data = text_of(in22k).encode("utf-8")
    print(f"imagenet-22k (derived): {len(in22k)} names, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
