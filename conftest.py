"""Collection rules for the whole repository (``pytest`` collects ``tests/`` and the
package's doctests): the modules at the package's old paths (:mod:`speechbrain_s4m.
_moved`) are the modules they name, so collecting them would run those doctests twice."""

from speechbrain_s4m._moved import MOVED

collect_ignore = [f"speechbrain_s4m/{old.rsplit('.', 1)[1]}.py" for old in MOVED]
