"""The progress bar of long loops (tqdm), or nothing when progress is off."""

from __future__ import annotations


class _NoBar:
    def update(self, n): pass
    def set_postfix(self, **kw): pass
    def close(self): pass


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over `total` steps named `desc`, or a do-nothing bar when not enabled."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", mininterval=0.5, leave=False)
