"""Batched launches: one RunInstances for many pods with the same launch parameters, every guarantee kept.

AWS limits RunInstances twice: requests (a bucket of 5, refilled 2 per second) and instances (a
bucket of 1,000, refilled 2 per second). One call per pod caps a scale-out at 2 pods per second;
one call with ``MaxCount`` = n launches n. :class:`BatchLaunch` gathers the cold launches of pods
whose first launch candidate (:mod:`vkec2.fleet.capacity`) has the same parameters into a batch
(:mod:`vkec2.store.launches`) for ``aws.launch_batch_window_seconds`` (at most
``aws.launch_batch_max`` pods) and launches it with one idempotent RunInstances:

- *the intent first*: a pod records its batch (``launch_batch``, and the batch's ClientToken as
  ``launch_token``) under its lock's fence right after joining, and the join is keyed by the pod's
  attempt in Redis, so a step that runs twice never joins twice;
- *one sender*: any member's step may claim a batch whose window is over; a claim held longer than
  one RunInstances can take is taken over and the call re-sent with the same ClientToken (EC2
  answers the same instances), so a crash between launch and assignment loses nothing;
- *no thread waits for a token*: the sender reserves one request token and one instance token per
  member (:mod:`vkec2.fleet.launchslot`); when they do not exist yet the batch
  goes back unsent with its slot and the step comes back then;
- *tags*: the instances are tagged at launch with the cluster, the node and the batch
  (``vkec2.io/launch-batch``); each member's instance is recorded in the batch in launch-index
  order in one script, then in the pod's record under its own fence when the member adopts it,
  and the pod tags follow at once or from the tagging pass (:mod:`vkec2.fleet.podtags`);
- *partial fulfilment*: members EC2 launched no instance for join a new batch; a capacity refusal
  marks the candidate unavailable and every member falls back to its single launch path;
- *deletes*: a deleted member leaves a batch not sent yet, or waits for the one being sent and
  terminates the instance it was given (:meth:`BatchLaunch.settle`).

Whoever sends a batch wakes the other members at once (``kick``) instead of leaving them to poll.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from vkec2.config import Settings
from vkec2.contract import TAG_CLUSTER, TAG_LAUNCH_BATCH, TAG_NODE
from vkec2.domain.instances import Instance
from vkec2.domain.models import PodRecord
from vkec2.domain.podspec import LaunchParams, user_data_for
from vkec2.domain.runinstances import run_instances_request
from vkec2.errors import Ec2Error
from vkec2.fleet.capacity import CapacityLaunch, marked
from vkec2.fleet.launchslot import SLOT_TOLERANCE_SECONDS, reserve
from vkec2.fleet.podtags import PodTags
from vkec2.ports import Ec2, LaunchTokens, PodLock
from vkec2.store.launches import LAUNCHED, OPEN, REFUSED, SENDING
from vkec2.store.redis_store import Store

log = logging.getLogger(__name__)

#: How much later than a batch's deadline its members look at it, should its sender not wake them.
FOLLOWER_SLACK_SECONDS = 2.0
#: How often a member looks again while another worker sends its batch.
SENDING_POLL_SECONDS = 1.0
BATCH_TOKEN_PREFIX = "vkec2-batch-"
#: How much longer than one RunInstances (its timeouts) a silent sender keeps its batch.
SENDER_SLACK_SECONDS = 5.0


def batch_token(batch_id: str) -> str:
    """The ClientToken of a batch's RunInstances."""
    return f"{BATCH_TOKEN_PREFIX}{batch_id}"


class BatchLaunch:
    """Joins pods to launch batches, sends them, and hands each member its instance."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ec2: Ec2,
        tokens: LaunchTokens,
        capacity: CapacityLaunch,
        *,
        kick: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ec2 = ec2
        self.tokens = tokens
        self.capacity = capacity  # the pod's candidates and the fleet's "unavailable" marks
        self.pod_tags = PodTags(store, ec2, tokens)
        self.kick = kick  # publish a create step of these pods now (they have an instance)

    @property
    def enabled(self) -> bool:
        return self.settings.aws.launch_batch_window_seconds > 0

    @property
    def _stale_seconds(self) -> float:
        """Longer than one RunInstances can take (one attempt: connect and read timeouts)."""
        aws = self.settings.aws
        return aws.connect_timeout_seconds + aws.read_timeout_seconds + SENDER_SLACK_SECONDS

    # -- the member's step ------------------------------------------------------------------

    def step(
        self, lock: PodLock, rec: PodRecord, params: LaunchParams, tags: Mapping[str, str]
    ) -> Instance | float | None:
        """One step of a cold launch through a batch: the pod's instance, a delay before the next
        step, or None when this launch is not (or no longer) batched — the single launch path runs."""
        if not rec.launch_batch:
            if not self.enabled or rec.launch_token or params.host_pool:
                return None
            return self._join(lock, rec, params, tags)
        view = self.store.batch_view(rec.launch_batch, rec.uid)
        if view is None:  # Redis lost the batch: its instances (tagged with it only) are orphans
            self._leave(lock, rec)
            return None
        if view.state == LAUNCHED:
            if view.instance is not None:
                return view.instance
            self._leave(lock, rec)  # EC2 launched fewer instances than the batch asked for
            return self._join(lock, rec, params, tags)
        if view.state == REFUSED:  # the candidate is marked unavailable: the next one batches
            self._leave(lock, rec)
            return self._join(lock, rec, params, tags)
        return self._send(lock, rec, params, tags, view.key)

    def adopted(self, rec: PodRecord, instance: Instance, tags: Mapping[str, str]) -> None:
        """A member takes its batch instance: its pod tags are remembered (and tried) first."""
        self.pod_tags.want(instance, rec.uid, tags)

    def _join(
        self, lock: PodLock, rec: PodRecord, params: LaunchParams, tags: Mapping[str, str]
    ) -> float | None:
        cands = self.capacity.candidates(rec, params)
        marks = self.capacity.marks_of(cands)
        cand = next((c for c in cands if not marked(c, marks)), None)
        if cand is None:
            return None  # no candidate has capacity now: the single path records the wait
        aws = self.settings.aws
        joined = self.store.join_batch(
            self._key(cand.params, tags),
            rec.uid,
            rec.attempt,
            window=aws.launch_batch_window_seconds,
            max_size=aws.launch_batch_max,
        )
        fields = {"launch_batch": joined.batch_id, "launch_token": batch_token(joined.batch_id)}
        lock.write(fields)
        for key, value in fields.items():
            setattr(rec, key, value)
        left = max(0.0, joined.deadline - joined.now)
        return left if joined.leader else left + FOLLOWER_SLACK_SECONDS

    def _leave(self, lock: PodLock, rec: PodRecord) -> None:
        """The pod's attempt is no longer in a batch: its next launch joins a new one, or goes alone."""
        self.store.leave_batches(rec.uid)
        lock.write({"launch_batch": "", "launch_token": ""})
        rec.launch_batch = rec.launch_token = ""

    def _send(
        self, lock: PodLock, rec: PodRecord, params: LaunchParams, tags: Mapping[str, str], key: str
    ) -> Instance | float | None:
        batch_id = rec.launch_batch
        sender = f"{rec.uid}/{secrets.token_hex(4)}"
        claim = self.store.claim_batch(batch_id, sender, self._stale_seconds)
        if claim.state == OPEN:
            return max(0.0, claim.at - claim.now) + SLOT_TOLERANCE_SECONDS
        if claim.state == SENDING:
            return SENDING_POLL_SECONDS
        if claim.state in (LAUNCHED, REFUSED):  # sent by another worker meanwhile: read it
            return self.step(lock, rec, params, tags)
        if not claim.claimed:  # Redis lost it
            self._leave(lock, rec)
            return None
        members = list(claim.members)
        slot = claim.at
        if not slot:
            try:
                slot = claim.now + reserve(self.tokens, len(members))
            except Ec2Error:  # beyond the limiter's horizon: the batch stays, unsent
                self.store.defer_batch(batch_id, sender)
                raise
        if slot - claim.now > SLOT_TOLERANCE_SECONDS:
            self.store.defer_batch(batch_id, sender, slot)
            return slot - claim.now
        cands = self.capacity.candidates(rec, params)
        cand = next((c for c in cands if self._key(c.params, tags) == key), None)
        if cand is None:  # the pod's parameters changed since it joined: it goes alone
            self.store.defer_batch(batch_id, sender, slot)
            self._leave(lock, rec)
            return None
        token = batch_token(batch_id)
        sent = cand.params
        trust = self.capacity.trust
        if trust is not None:  # the agents bootstrap with the batch's token
            sent = replace(sent, user_data=user_data_for(self.settings, sent.instance_type, trust(token)))
        lock.guard()
        try:
            with self.tokens.prepaid("RunInstances"):
                instances = self.ec2.run_instances(
                    sent, self._launch_tags(tags, batch_id), token, len(members)
                )
        except Ec2Error as exc:
            if not exc.capacity:  # the next claimer sends it again, on tokens of its own: the
                self.store.defer_batch(batch_id, sender, 0.0)  # reserved ones went on this call
                raise
            self.capacity.refused(cand, exc)
            self.store.finish_batch(batch_id, {}, refused=(exc.code or "", exc.message))
            log.info("batch %s of %d pods refused: %s", batch_id, len(members), exc.code)
            self._wake([m for m in members if m != rec.uid])
            self._leave(lock, rec)
            return self._join(lock, rec, params, tags)  # the next candidate, batched again
        given = dict(zip(members, instances, strict=False))
        if self.store.finish_batch(batch_id, given):
            log.info(
                "batch %s: %d instances for %d pods (%s)",
                batch_id,
                len(instances),
                len(members),
                cand.label,
            )
        self._wake([m for m in members if m != rec.uid])
        return self.step(lock, rec, params, tags)  # this pod's own instance, as recorded

    def _wake(self, uids: Sequence[str]) -> None:
        if self.kick is not None and uids:
            self.kick(uids)

    def _launch_tags(self, tags: Mapping[str, str], batch_id: str) -> dict[str, str]:
        """What every instance of a batch is tagged with at launch: cluster, node and batch."""
        return {TAG_CLUSTER: tags[TAG_CLUSTER], TAG_NODE: tags[TAG_NODE], TAG_LAUNCH_BATCH: batch_id}

    def _key(self, params: LaunchParams, tags: Mapping[str, str]) -> str:
        """The launch parameters pods must share to be launched together: the whole request but
        for its count, token, user data (the batch's) and batch tag."""
        common = replace(params, user_data=None)
        request = run_instances_request(common, self._launch_tags(tags, ""), "")
        blob = json.dumps(request, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    # -- deletes ----------------------------------------------------------------------------

    def settle(self, lock: PodLock, rec: PodRecord, note: Callable[[Instance], None]) -> float | None:
        """Before a delete goes on: a member's batch instance, if it has one, is ``note``d in its
        record (the delete then terminates it), or the member leaves a batch not sent yet; the delay
        before the next step while the batch is being sent, else None."""
        if not rec.launch_batch or rec.instance_id:
            return None
        view = self.store.batch_view(rec.launch_batch, rec.uid)
        if view is not None and view.state == LAUNCHED and view.instance is not None:
            note(view.instance)
            return None
        if view is None or view.state in (LAUNCHED, REFUSED):
            self._leave(lock, rec)
            return None
        if self.store.withdraw_from_batch(rec.launch_batch, rec.uid):
            self._leave(lock, rec)
            return None
        return SENDING_POLL_SECONDS
