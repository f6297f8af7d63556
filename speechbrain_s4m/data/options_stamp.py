"""The options an output folder was made with: reuse it when they are unchanged, and
never overwrite it without ``force``.

Data preparation (manifests), the synthetic dataset and the LibriSpeech mixtures all
record their options in ``<folder>/<kind>_options.json``::

    {"options": {...}, "info": {...}}

The stamp is removed before the outputs are rewritten and written last, atomically
(a temporary file renamed over it), so a folder interrupted half-way never looks
finished.

Authors
 * speechbrain-s4m contributors
"""

import json
import os
from typing import Any, Dict, Mapping, Optional


class OptionsConflictError(FileExistsError):
    """An output folder holds data made with other options (or unfinished data), and
    ``force`` was not given."""


class OptionsStamp:
    """``<folder>/<kind>_options.json`` for one set of options.

    Arguments
    ---------
    folder : str
        The output folder the stamp describes.
    kind : str
        Names the file, ``<kind>_options.json`` (``preparation``, ``synthetic``, ...).
    options : mapping
        Everything that determines the outputs (JSON-serialisable).

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> stamp = OptionsStamp(folder, "example", {"seed": 0})
    >>> stamp.matches()
    False
    >>> stamp.write(info={"hours": 1.5})
    >>> stamp.matches(), OptionsStamp(folder, "example", {"seed": 1}).matches()
    (True, False)
    >>> os.path.basename(stamp.path)
    'example_options.json'
    """

    def __init__(self, folder: str, kind: str, options: Mapping[str, Any]):
        self.folder = os.path.abspath(os.fspath(folder))
        self.path = os.path.join(self.folder, f"{kind}_options.json")
        self.options: Dict[str, Any] = json.loads(json.dumps(dict(options)))  # as read back

    def recorded(self) -> Optional[Dict[str, Any]]:
        """The options in the file, or None when it is missing or unreadable."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        return record.get("options")

    def matches(self) -> bool:
        """Whether the folder was made with these options (and finished)."""
        return self.recorded() == self.options

    def clear(self) -> None:
        """Remove the stamp: the outputs are about to be rewritten."""
        if os.path.exists(self.path):
            os.remove(self.path)

    def write(self, info: Optional[Mapping[str, Any]] = None) -> None:
        """Write ``{"options": ..., "info": ...}`` atomically; call it last."""
        os.makedirs(self.folder, exist_ok=True)
        record = {"options": self.options, "info": dict(info or {})}
        temporary = self.path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(temporary, self.path)

    def refuse_overwrite(self, target: str, tool: str, force: bool) -> None:
        """Raise :class:`OptionsConflictError` naming ``target`` (the data that would be
        overwritten) and why, unless ``force``; call it when ``target`` holds data that
        does not match."""
        if force:
            return
        recorded = self.recorded()
        if recorded is None:
            why = f"it has no matching {os.path.basename(self.path)} (another dataset, or unfinished)"
        elif recorded == self.options:
            why = "it is incomplete (files are missing)"
        else:
            why = f"it was made with other options ({self.path})"
        raise OptionsConflictError(
            f"{tool}: {target} already exists and {why}; refusing to overwrite it. "
            f"Use --force (force=True) to replace it, or another output folder."
        )
