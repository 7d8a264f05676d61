"""Which cache entries a model can use: T1w-only entries serve only models that need no fMRI.

A participant with a usable T1w but no usable BOLD (missing, too short) is cached T1w-only
(:attr:`~m2m_bids.preproc.entrymeta.EntryMeta.no_bold` says why) when the run needs no fMRI, so
sMRI + tabular models (``--modalities smri tabular``) train on and predict for them. Every stage
that feeds a model (group training, application of a torch or classical bundle) asks here which
entries it may use, and refuses a participant left with none, naming the missing BOLD (exit 65).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from m2m_bids.entity_labels import strip_prefix
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.preproc.entrymeta import EntryMeta

#: Cache tensors made from the BOLD run: a T1w-only entry has none of them.
BOLD_TENSORS = frozenset({"fmri", "alff", "falff", "bold_mean"})


class _Entry(Protocol):
    key: str
    meta: EntryMeta

    @property
    def names(self) -> list[str]: ...


def split_by_fmri(entries: Sequence[_Entry], required: Iterable[str] = ("fmri",)) -> tuple[list[Any], list[Any]]:
    """``(usable, lacking)``: the entries holding every tensor in ``required``, and the others."""
    needed = set(required)
    usable, lacking = [], []
    for entry in entries:
        (usable if needed <= set(entry.names) else lacking).append(entry)
    return usable, lacking


def refuse_lacking(entries: Sequence[_Entry], required: Iterable[str],
                   user: str) -> tuple[list[Any], dict[str, AppError]]:
    """The entries ``user`` (a model, in words) can use, and one refusal (exit 65) per participant
    left with none. A participant that keeps some entries (another session with BOLD) is not refused."""
    needed = sorted(set(required))
    usable, lacking = split_by_fmri(entries, needed)
    kept = {_participant(e) for e in usable}
    by_participant: dict[str, list[Any]] = defaultdict(list)
    for entry in lacking:
        by_participant[_participant(entry)].append(entry)
    refusals = {label: _refusal(label, runs, needed, user) for label, runs in sorted(by_participant.items())
                if label not in kept}
    return usable, refusals


def _participant(entry: _Entry) -> str:
    return strip_prefix(entry.meta.participant, "sub")


def _refusal(label: str, entries: list[Any], needed: list[str], user: str) -> AppError:
    reasons = sorted({e.meta.no_bold or "its cache entries hold no BOLD tensors" for e in entries})
    missing = sorted(set(needed) - set(entries[0].names))
    return AppError(f"sub-{label} has no usable BOLD ({'; '.join(reasons)}), and {user} needs "
                    f"{', '.join(missing)}", ExitCode.DATA_ERROR, path=entries[0].meta.provenance.source_t1w,
                    hint="use an sMRI + tabular model for this participant (--modalities smri tabular), "
                         "or add a usable BOLD run")
