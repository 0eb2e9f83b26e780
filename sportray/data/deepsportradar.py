"""DeepSportRadar instance segmentation (basketball): COCO json, "human" masks, tile labels.

Layouts (both are read as they are)::

    ROOT/trainvaltest.json  (and/or train.json, val.json, test.json, ...: COCO instance files)
    ROOT/<ARENA>/<game>/camcourt1_<timestamp>_0.png      e.g. KS-FR-CAEN/24322/camcourt1_1513364954220_0.png

    the challenge repository as published (DeepSportradar/instance-segmentation-challenge):
    ROOT/annotations/{train,val,test,trainval,trainvaltest,challenge}.json
    ROOT/basketball-instants-dataset/<ARENA>/<game>/camcourt1_<timestamp>_0.png

Which COCO file is used is explicit (`coco_file`: a name such as "trainvaltest" or a path; by
default trainvaltest.json when present, else the only .json there is) and reported. Where the
images are: `images_root` when given, else the first of the json's folder, ROOT, and a
`basketball-instants-dataset/` folder beside the json's folder or in ROOT that holds the file.
An image that no "human" annotation names is *unlabelled* (challenge.json lists 84 such images,
trainvaltest.json 17): a basketball broadcast frame always shows players, so no mask means not
annotated, never "all background"; such images are counted, never probe data.

Each COCO file: "images" [{id, file_name, width, height}], "annotations" [{id, image_id,
category_id, segmentation, area, bbox, iscrowd}], "categories" [{id, name: "human"}, ...].
`file_name` is relative to the json's folder (ROOT/<file_name> is tried next). The arena of an
image is the first path component of its file_name ("KS-FR-CAEN"). Segmentations may be
compressed RLE ({"size": [h, w], "counts": "..."}), uncompressed RLE (counts a list of ints) or
polygons (list of [x0, y0, x1, y1, ...]); all are decoded with pycocotools.mask. Only
annotations of the "human" category count (the real files also have none other; the v2 release
adds "ball", which is ignored). The COCO files are the .json at the top of ROOT (or, when there
is none, one folder down: ROOT/annotations/x.json).

Label quirks are notes (`scan_dataset(..., notes=[])`), never silent: an image id listed twice in
one file (the first entry is kept, the annotations go to it), an `iscrowd` mask (kept: a crowd
region covers people, so it counts towards the tiles like any human mask).

Tile labels (DESIGN.md §4): the union of human masks is resized to 224x224 by *area averaging*:
each output pixel holds the exact fraction of its footprint in the original image that the mask
covers (no threshold before averaging). A 16x16 tile is "player" (1) when the mean of its
pixels, i.e. the covered fraction of the tile's footprint, is >= TILE_COVER_MIN (0.25).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sportray.config import ConfigError, PATCH, PROBE_SIZE, TILE_COVER_MIN
from sportray.data.errors import DataError

HUMAN = "human"
# The challenge's held-out test split "A" (tools/gen_annotations.py): three arenas never trained on.
DEFAULT_TEST_ARENAS = ("KS-FR-CAEN", "KS-FR-LIMOGES", "KS-FR-ROANNE")
_EPS = 1e-9


@dataclass(frozen=True)
class Sample:
    image_path: Path
    file_name: str
    arena: str
    width: int
    height: int
    image_id: int
    annotations: tuple = field(default_factory=tuple)   # COCO annotation dicts ("human" only)
    source: Path | None = None                          # the json that listed it

    @property
    def labelled(self) -> bool:
        """False for an image no "human" annotation names (unannotated, e.g. challenge.json)."""
        return bool(self.annotations)


COCO_NAMES = ("train", "val", "test", "trainval", "trainvaltest", "challenge")
DEFAULT_COCO = "trainvaltest"
IMAGES_DIR = "basketball-instants-dataset"     # the challenge repository's images folder


# ----------------------------------------------------------------------------- reading

def _json_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(root, "is neither a COCO .json file nor a directory")
    files = sorted(root.glob("*.json"))
    if not files:
        files = sorted(root.glob("*/*.json"))
    if not files:
        raise DataError(root, "no COCO .json files found (expected e.g. trainvaltest.json beside "
                              "the arena folders, or annotations/trainvaltest.json)")
    return files


def choose_coco(root: str | Path, coco_file: str = "") -> Path:
    """The one COCO file the probe set uses.

    coco_file: "" (default: trainvaltest.json when present, else the only .json), a name
    ("train", "val", "test", "trainval", "trainvaltest", "challenge", with or without .json) looked
    up where the COCO files are, or a path to a .json file.
    """
    root = Path(root)
    if root.is_file():
        if coco_file and Path(coco_file).stem != root.stem and Path(coco_file) != root:
            raise ConfigError(f"--basketball-coco {coco_file!r}: --basketball is the file {root}")
        return root
    files = _json_files(root)
    if coco_file:
        as_path = Path(coco_file)
        if as_path.suffix.lower() == ".json" and as_path.is_file():
            return as_path
        name = as_path.name[:-5] if as_path.name.lower().endswith(".json") else as_path.name
        found = [f for f in files if f.stem == name]
        if not found:
            raise ConfigError(f"--basketball-coco {coco_file!r}: no {name}.json in {files[0].parent} "
                              f"(COCO files there: {', '.join(f.name for f in files)})")
        return found[0]
    default = [f for f in files if f.stem == DEFAULT_COCO]
    if default:
        return default[0]
    if len(files) == 1:
        return files[0]
    raise ConfigError(f"{root}: several COCO files and no {DEFAULT_COCO}.json "
                      f"({', '.join(f.name for f in files)}): choose one with --basketball-coco NAME")


def image_roots(coco_path: str | Path, root: str | Path | None = None,
                images_root: str | Path = "") -> list[Path]:
    """Folders an image's file_name may be relative to, in the order they are tried."""
    if images_root:
        images_root = Path(images_root)
        if not images_root.is_dir():
            raise ConfigError(f"--basketball-images {images_root}: not a directory")
        return [images_root]
    here = Path(coco_path).parent
    base = Path(root) if root is not None and Path(root).is_dir() else here
    candidates = [here, base, here.parent / IMAGES_DIR, base / IMAGES_DIR, here / IMAGES_DIR]
    out: list[Path] = []
    for c in candidates:
        if c not in out and (c == here or c.is_dir()):
            out.append(c)
    return out


def _rle_size(seg) -> list | None:
    if isinstance(seg, dict):
        return seg.get("size")
    return None


def _scan_file(path: Path, roots: Path | list[Path], seen: set, check_images: bool,
               notes: list | None = None) -> tuple[list[Sample], list[DataError]]:
    """Samples of one COCO file (unlabelled ones included) and its problems; label quirks are
    appended to `notes` (DataErrors: file + what). Images are looked up under `roots` in order."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    notes = [] if notes is None else notes
    doc, human_ids, fatal = _read_coco(path)
    if fatal is not None:
        return [], [fatal]
    problems: list[DataError] = []
    images = _images_by_id(path, doc["images"], problems, notes)
    anns = _human_annotations(path, doc["annotations"], images, human_ids, problems, notes)
    samples = []
    in_file: set = set()
    for img_id, im in images.items():
        fname = str(im["file_name"])
        if fname in in_file:
            notes.append(DataError(path, f"image {fname} is listed twice (ids differ); the first "
                                         "entry is used"))
            continue
        in_file.add(fname)
        if fname in seen:
            continue
        seen.add(fname)
        img_path, problem = _find_image(path, img_id, im, roots, check_images)
        if problem is not None:
            problems.append(problem)
            continue
        samples.append(Sample(img_path, fname, fname.replace("\\", "/").split("/")[0],
                              int(im["width"]), int(im["height"]), img_id,
                              tuple(anns.get(img_id, ())), path))
    return samples, problems


def _read_coco(path: Path) -> tuple[dict | None, set, DataError | None]:
    """(the document, the ids of its "human" category, None), or the one error that makes the
    file unusable as a COCO instance file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        return None, set(), DataError(path, f"not JSON (not UTF-8 text: {exc.reason})")
    except json.JSONDecodeError as exc:
        return None, set(), DataError(path, f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    if not isinstance(doc, dict):
        return None, set(), DataError(path, "not a COCO file (top level is not an object)")
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            return None, set(), DataError(path, f"not a COCO instance file: '{key}' list missing")
    cats = doc.get("categories") or []
    human_ids = {c.get("id") for c in cats if isinstance(c, dict) and c.get("name") == HUMAN}
    if not human_ids:
        names = [c.get("name") for c in cats if isinstance(c, dict)]
        return None, set(), DataError(path, f"no 'human' category (categories: {names})")
    return doc, human_ids, None


def _images_by_id(path: Path, entries: list, problems: list, notes: list) -> dict:
    """id -> image entry; an entry without its keys is a problem, a repeated id a note (the
    first entry keeps the id)."""
    images: dict = {}
    for i, im in enumerate(entries):
        if not isinstance(im, dict) or not all(k in im for k in ("id", "file_name", "width", "height")):
            problems.append(DataError(path, f"image #{i} lacks id/file_name/width/height"))
            continue
        if im["id"] in images:
            notes.append(DataError(path, f"duplicate image id {im['id']}: image #{i} "
                                         f"({im['file_name']}) is left out, the first entry "
                                         f"({images[im['id']]['file_name']}) keeps the id's annotations"))
            continue
        images[im["id"]] = im
    return images


def _human_annotations(path: Path, entries: list, images: dict, human_ids: set, problems: list,
                       notes: list) -> dict:
    """image id -> its usable "human" annotations (other categories are skipped); a malformed
    one is a problem, an iscrowd one a note (and kept)."""
    anns: dict = {k: [] for k in images}
    for i, ann in enumerate(entries):
        where = f"annotation #{i}" + (f" (id {ann.get('id')})" if isinstance(ann, dict) else "")
        if not isinstance(ann, dict):
            problems.append(DataError(path, f"{where} is not an object"))
            continue
        missing = [k for k in ("image_id", "segmentation") if k not in ann]
        if missing:
            problems.append(DataError(path, f"{where} has no '{missing[0]}'"))
            continue
        if ann.get("category_id") not in human_ids:
            continue
        im = images.get(ann["image_id"])
        if im is None:
            problems.append(DataError(path, f"{where}: image_id {ann['image_id']} is not in 'images'"))
            continue
        reason = _segmentation_problem(ann["segmentation"], im)
        if reason:
            problems.append(DataError(path, f"{where}: {reason}"))
            continue
        if ann.get("iscrowd"):
            notes.append(DataError(path, f"{where}: iscrowd mask on image {im['file_name']} "
                                         "(kept: a crowd region covers people)"))
        anns[ann["image_id"]].append(ann)
    return anns


def _segmentation_problem(seg, im: dict) -> str:
    """What is wrong with a segmentation's shape for its image ("" when nothing): an RLE needs
    'size' (its image's) and 'counts'; anything else must be a list of polygons."""
    if isinstance(seg, dict):
        size = _rle_size(seg)
        if not isinstance(size, (list, tuple)) or len(size) != 2 or "counts" not in seg:
            return "RLE needs 'size' [h, w] and 'counts'"
        if [int(size[0]), int(size[1])] != [int(im["height"]), int(im["width"])]:
            return (f"RLE size {list(size)} differs from its image {im['file_name']} "
                    f"(height x width {im['height']} x {im['width']})")
    elif not isinstance(seg, list):
        return "segmentation is neither RLE nor polygons"
    return ""


def _find_image(path: Path, img_id, im: dict, roots: list[Path], check_images: bool
                ) -> tuple[Path | None, DataError | None]:
    """The image file of an entry (the first root that has it) or why it cannot be used:
    missing, or with check_images unreadable or not the size the json says."""
    fname = str(im["file_name"])
    candidates = [r / fname for r in roots]
    img_path = next((c for c in candidates if c.is_file()), None)
    if img_path is None:
        looked = "" if len(roots) == 1 else "; looked under " + ", ".join(str(r) for r in roots)
        return None, DataError(candidates[0], f"image file missing (listed in {path.name} "
                                              f"as image id {img_id}{looked}; "
                                              "--basketball-images DIR says where the images are)")
    if not check_images:
        return img_path, None
    try:
        from PIL import Image   # here, not at the top: 25 ms, and only checked images need it
        with Image.open(img_path) as pil:
            w, h = pil.size
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ...
        return None, DataError(img_path, f"unreadable image ({type(exc).__name__}: {exc})")
    if (w, h) != (int(im["width"]), int(im["height"])):
        return None, DataError(img_path, f"image is {w}x{h} but {path.name} says "
                                         f"{im['width']}x{im['height']}")
    return img_path, None


def scan_dataset(root: str | Path, check_images: bool = True, coco_file: str = "",
                 images_root: str | Path = "", notes: list | None = None
                 ) -> tuple[list[Sample], list[DataError]]:
    """The samples of the chosen COCO file (choose_coco; unlabelled ones included, see
    Sample.labelled), and one DataError per problem (file + reason). Quirks go to `notes`."""
    root = Path(root)
    coco = choose_coco(root, coco_file)
    samples, problems = _scan_file(coco, image_roots(coco, root, images_root), set(), check_images, notes)
    samples.sort(key=lambda s: s.file_name)
    return samples, problems


def read_dataset(root: str | Path, check_images: bool = True, coco_file: str = "",
                 images_root: str | Path = "", labelled_only: bool = False) -> list[Sample]:
    """Samples of the chosen COCO file (see the module doc); the first problem raises.
    labelled_only: leave out the images no "human" annotation names."""
    samples, problems = scan_dataset(root, check_images, coco_file, images_root)
    if problems:
        raise problems[0]
    return [s for s in samples if s.labelled] if labelled_only else samples


# ----------------------------------------------------------------------------- masks

def decode_segmentation(seg, height: int, width: int, where: str | Path = "<segmentation>") -> np.ndarray:
    """bool (height, width) of one COCO segmentation (compressed/uncompressed RLE or polygons)."""
    from pycocotools import mask as mask_utils

    try:
        if isinstance(seg, dict):
            size = [int(s) for s in seg["size"]]
            if size != [height, width]:
                raise DataError(where, f"RLE size {size} differs from the image height x width "
                                       f"{height} x {width}")
            counts = seg["counts"]
            if isinstance(counts, list):
                rle = mask_utils.frPyObjects(seg, height, width)
            else:
                rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            polys = [p for p in seg if len(p) >= 6]
            if not polys:
                return np.zeros((height, width), bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        with warnings.catch_warnings():   # pycocotools' own NumPy 2 copy= deprecation, harmless
            warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
            m = mask_utils.decode(rle)
    except DataError:
        raise
    except Exception as exc:  # pycocotools raises TypeError/ValueError/... on bad input
        raise DataError(where, f"cannot decode segmentation ({type(exc).__name__}: {exc})") from None
    if m.ndim == 3:
        m = m.any(axis=2)
    return m.astype(bool)


def instance_masks(sample: Sample) -> list[np.ndarray]:
    where = sample.source or sample.image_path
    return [decode_segmentation(a["segmentation"], sample.height, sample.width, where)
            for a in sample.annotations]


def union_mask(sample: Sample) -> np.ndarray:
    """bool (height, width): the union of the sample's "human" masks."""
    out = np.zeros((sample.height, sample.width), bool)
    for m in instance_masks(sample):
        out |= m
    return out


def _area_resample(cum: np.ndarray, n_dst: int, axis: int) -> np.ndarray:
    """Exact area integral over n_dst equal intervals, given the zero-padded cumsum along axis."""
    n_src = cum.shape[axis] - 1
    edges = np.arange(n_dst + 1, dtype=np.float64) * (n_src / n_dst)
    lo = np.clip(np.floor(edges).astype(np.int64), 0, n_src - 1)
    frac = edges - lo
    a = np.take(cum, lo, axis=axis)
    b = np.take(cum, lo + 1, axis=axis)
    shape = [1] * cum.ndim
    shape[axis] = -1
    integral = a + (b - a) * frac.reshape(shape)    # the cumsum is piecewise linear: exact
    return np.diff(integral, axis=axis)


def mask_coverage(mask: np.ndarray, size: int = PROBE_SIZE) -> np.ndarray:
    """float64 (size, size): fraction of each output pixel's footprint covered by the mask.

    Exact area resampling of a binary mask (aspect not kept: probe inputs are squares).
    """
    m = np.asarray(mask, dtype=np.float64)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {m.shape}")
    h, w = m.shape
    c = np.zeros((h + 1, w))
    np.cumsum(m, axis=0, out=c[1:])
    rows = _area_resample(c, size, 0)                 # (size, w): integrals over row bands
    c2 = np.zeros((size, w + 1))
    np.cumsum(rows, axis=1, out=c2[:, 1:])
    cells = _area_resample(c2, size, 1)               # (size, size)
    return cells / ((h / size) * (w / size))


def resize_mask(mask: np.ndarray, size: int = PROBE_SIZE) -> np.ndarray:
    """bool (size, size): a pixel is on when the mask covers at least half of its footprint."""
    return mask_coverage(mask, size) >= 0.5 - _EPS


def tile_labels(mask: np.ndarray, size: int = PROBE_SIZE, tile: int = PATCH,
                cover: float = TILE_COVER_MIN) -> np.ndarray:
    """uint8 (size//tile, size//tile): 1 where the mask covers >= `cover` of the tile.

    The mask (any height x width) is area-resized to size x size (mask_coverage); a tile's
    covered fraction is the mean of its tile x tile pixels, i.e. the exact covered fraction of
    its footprint in the original image. Compared with a 1e-9 tolerance so that exactly 25 %
    counts as covered.
    """
    if size % tile:
        raise ValueError(f"size {size} is not a multiple of tile {tile}")
    return tiles_of_coverage(mask_coverage(mask, size), tile, cover)


def tiles_of_coverage(cov: np.ndarray, tile: int = PATCH, cover: float = TILE_COVER_MIN) -> np.ndarray:
    """tile_labels from a mask_coverage already computed (the probe set needs both)."""
    n = cov.shape[0] // tile
    frac = cov.reshape(n, tile, n, tile).mean(axis=(1, 3))
    return (frac >= cover - _EPS).astype(np.uint8)


# ----------------------------------------------------------------------------- splits

def _arena_list(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    out = [a.strip() for a in value if a and a.strip()]
    return out or None


def split_arenas(samples: list[Sample], test_arenas=None, valid_arenas=None, seed: int = 0
                 ) -> dict[str, list[Sample]]:
    """{"train", "valid", "test"} -> samples, split by arena (test arenas are never trained on).

    test_arenas (list or comma string): default = the challenge's held-out arenas
    DEFAULT_TEST_ARENAS that are present; if none is (e.g. the synthetic set), a seeded choice
    of max(1, round(0.2 * n_arenas)) arenas.
    valid_arenas: default = a seeded max(1, round(0.15 * n_arenas)) of the remaining arenas when
    at least 3 remain; otherwise every 7th image of the training arenas (the challenge's
    `images[4::7]` rule), so valid is non-empty whenever train has >= 5 images.
    """
    arenas = sorted({s.arena for s in samples})
    if len(arenas) < 2:
        raise ConfigError(f"--test-arenas: a split by arena needs at least 2 arenas, found {arenas}")
    rng = np.random.default_rng(seed)
    test = _arena_list(test_arenas)
    if test is None:
        test = [a for a in DEFAULT_TEST_ARENAS if a in arenas]
        if not test:
            k = max(1, round(0.2 * len(arenas)))
            test = sorted(rng.choice(arenas, size=k, replace=False).tolist())
    valid = _arena_list(valid_arenas)
    unknown = sorted(set(test + (valid or [])) - set(arenas))
    if unknown:
        raise ConfigError(f"--test-arenas/valid arenas {unknown} not in the dataset (arenas: {arenas})")
    if set(test) & set(valid or []):
        raise ConfigError(f"arenas {sorted(set(test) & set(valid))} are both test and valid")
    rest = [a for a in arenas if a not in test]
    if not rest:
        raise ConfigError(f"--test-arenas {test}: every arena is held out, none left to train on")
    if valid is None and len(rest) >= 3:
        k = max(1, round(0.15 * len(arenas)))
        valid = sorted(rng.choice(rest, size=min(k, len(rest) - 1), replace=False).tolist())
    out: dict[str, list[Sample]] = {"train": [], "valid": [], "test": []}
    train_pool = []
    for s in sorted(samples, key=lambda s: s.file_name):
        if s.arena in test:
            out["test"].append(s)
        elif valid is not None and s.arena in valid:
            out["valid"].append(s)
        else:
            train_pool.append(s)
    if valid is None:
        out["valid"] = train_pool[4::7]
        del train_pool[4::7]
    out["train"] = train_pool
    return out
