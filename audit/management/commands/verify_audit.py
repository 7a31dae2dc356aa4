import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.chain import verify_log
from audit.checkpoints import CheckpointError, parse_checkpoints, signature_problem


class Command(BaseCommand):
    help = (
        "Recompute the audit hash chain and check that each event's columns match its hashed content; exit "
        "non-zero naming the first broken event. With --from-checkpoint, also check each signed checkpoint in "
        "FILE and that the chain still reaches its head with the same hash."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--from-checkpoint",
            metavar="FILE",
            help="a checkpoint (manage.py audit_checkpoint), JSON lines of them, or log lines carrying them",
        )

    def handle(self, from_checkpoint=None, **options):
        started = time.perf_counter()
        checkpoints = self._load(from_checkpoint) if from_checkpoint else []
        result = verify_log(watch={int(c["seq"]) for c in checkpoints})
        elapsed = time.perf_counter() - started
        checked, broken = result.checked, result.broken
        if broken:
            raise CommandError(
                f"audit chain broken at event #{broken.seq}: {broken.reason} ({checked} events verified before it)"
            )
        for checkpoint in sorted(checkpoints, key=lambda c: int(c["seq"])):
            self._check_reaches(checkpoint, checked, result.hashes)
        self.stdout.write(f"audit chain intact: {checked} events verified in {elapsed:.2f}s")
        if checkpoints:
            newest = max(checkpoints, key=lambda c: int(c["seq"]))
            self.stdout.write(
                f"checkpoints: {len(checkpoints)} valid; the chain reaches #{newest['seq']} "
                f"(signed {newest['at']}) unchanged and continues to #{checked}"
            )

    def _load(self, path: str) -> list[dict]:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise CommandError(f"cannot read checkpoint file {path}: {exc.strerror}") from None
        checkpoints = parse_checkpoints(text)
        if not checkpoints:
            raise CommandError(f"no audit checkpoint found in {path}")
        for checkpoint in checkpoints:
            try:
                problem = signature_problem(checkpoint)
            except CheckpointError as exc:
                raise CommandError(str(exc)) from None
            if problem:
                raise CommandError(
                    f"checkpoint for event #{checkpoint.get('seq')} (signed {checkpoint.get('at')}) "
                    f"is not valid: {problem}"
                )
        return checkpoints

    @staticmethod
    def _check_reaches(checkpoint: dict, head_seq: int, seen: dict[int, str]) -> None:
        seq, signed_at = int(checkpoint["seq"]), checkpoint["at"]
        if seq == 0:
            return  # signed while the log was empty: any chain reaches it
        if seq > head_seq:
            raise CommandError(
                f"audit log truncated: the chain ends at event #{head_seq}, but the checkpoint signed {signed_at} "
                f"says event #{seq} existed (events #{head_seq + 1}..#{seq} are missing)"
            )
        if seen.get(seq) != checkpoint["hash"]:
            raise CommandError(
                f"audit chain rewritten: event #{seq} does not match the checkpoint signed {signed_at} "
                f"(events up to #{seq} were changed, or removed and replaced, and the hashes recomputed)"
            )
