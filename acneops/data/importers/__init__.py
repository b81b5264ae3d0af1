"""Bring your own data: import ACNE04 or a folder-per-class dataset into the canonical raw layout.

The raw layout (what `ingest` reads, and what `acneops data phantom` writes too) is::

    OUT/images/<file>
    OUT/labels.csv           header: image,label,lesions,source,split
    OUT/import_report.json   (imports only) totals per class and source, and the history of imports: what each
                             refused, skipped, left out, and what metadata it removed

``image`` is the path relative to OUT, ``lesions`` an integer or empty, ``source`` a short name
(``acne04``, ``folders``, ``phantom-hr``, ``phantom-web``, or ``--source NAME``) and ``split`` empty or a fixed
train/val/test assignment that ingest must respect. Importers copy each image with its metadata
removed and its pixels unchanged (:mod:`acneops.data.metadata`), never read through a link that
leaves the source folder (:mod:`.source`), check names, labels and lists, and fail with one message
listing every bad line rather than importing half a dataset (or, when asked, skip the bad lines and
list them in the report). A whole import is built in a hidden sibling folder and renamed into place,
so OUT is either the old import or the new one. With ``append`` an import adds its source beside those
already in OUT (files under ``images/<source>/``), keeping every earlier file, row and report entry.

Modules: :mod:`.acne04` and :mod:`.folders` (one per source layout), :mod:`.layout` (the output and
the result), :mod:`.write` (a new layout or an appended source, and the report), :mod:`.source` (safe
reading of the source folder).
"""

from acneops.data.importers.acne04 import (
    IMAGE_EXTENSIONS,
    ImportersConfig,
    import_acne04,
)
from acneops.data.importers.folders import class_name, import_folders
from acneops.data.importers.layout import (
    RAW_COLUMNS,
    REPORT_FILE,
    SOURCE_RE,
    ImportResult,
    check_output_dir,
    staged_output,
    write_labels,
)

__all__ = [
    "IMAGE_EXTENSIONS", "RAW_COLUMNS", "REPORT_FILE", "SOURCE_RE", "ImportResult", "ImportersConfig",
    "check_output_dir",
    "class_name", "import_acne04", "import_folders", "staged_output", "write_labels",
]
