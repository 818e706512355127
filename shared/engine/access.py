"""Proving access I/O: the workload's token from the cluster, Entra's exchange, one OpenAI read.

The stages run in order and stop at the first that does not pass; shared.domain.access_proof says
what each answer means. Extra reads happen only to explain a refusal: the identity's federated
credentials when Entra matched none; the roles it holds at the account or above, and their
definitions, when the data plane answered PermissionDenied; whether the cluster authorises with Azure
RBAC, when it refused the token (what Keyless lacks differs: a data action, or a RoleBinding).

A private cluster reached through run command proves access inside its run-command pod
(shared.domain.pod_proof): the token is made, exchanged and used there, and only the verdict comes
back, since AKS stores a run command's result. The verdict is judged by the same decisions.
"""

from __future__ import annotations

from shared.adapters.access_probe import token_claims
from shared.adapters.runcommand import RunCommandKube
from shared.domain import access_proof, planner, pod_proof
from shared.domain.access_proof import DataPlaneAnswer, EntraRefusal, TokenClaims
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, NotAllowed, NotFoundError, TemporaryError
from shared.domain.observed import AccountState, IdentityState
from shared.domain.verification import Check
from shared.engine.cluster_access import ClusterAccess, ClusterConnection
from shared.engine.world import World


def prove_access(
    w: World, b: Binding, identity: IdentityState, account: AccountState, connection: ClusterConnection
) -> Check:
    scope = access_proof.openai_scope(account.endpoint)
    readable = bool(account.custom_subdomain and account.endpoint)

    def token_or_verdict(api: ClusterAccess) -> str | pod_proof.PodVerdict:
        if isinstance(api, RunCommandKube):  # the whole proof in the pod: no token comes out
            return api.prove_in_cluster(
                b.cluster, b.namespace, b.service_account, planner.AUDIENCE, access_proof.TOKEN_SECONDS,
                pod_proof.token_url(w.settings.authority_host, identity.tenant_id), identity.client_id, scope,
                pod_proof.models_url(account.endpoint if readable else None),
            )  # fmt: skip
        return api.request_token(
            b.cluster, b.namespace, b.service_account, planner.AUDIENCE, access_proof.TOKEN_SECONDS
        )

    # 1. the token, as the kubelet would project it into the pod
    try:
        got = connection.call(token_or_verdict)
        if isinstance(got, pod_proof.PodVerdict):
            return _judge_verdict(w, b, identity, account, got)
        token = got
        claims = token_claims(token)
    except TemporaryError as exc:
        return access_proof.token_refused(exc.reason, temporary=True)
    except NotFoundError as exc:
        return access_proof.token_refused(exc.reason, temporary=False, not_found=True)
    except NotAllowed as exc:
        return access_proof.token_not_allowed(exc.reason, str(b.cluster), b.namespace, _azure_rbac(w, b))
    except KeylessError as exc:
        return access_proof.token_refused(exc.reason, temporary=False, not_found=" not found" in exc.reason)
    except ValueError as exc:
        return access_proof.token_refused(str(exc), temporary=False)

    # 2. Entra's exchange, as azure-identity does it in the pod
    exchanged = w.probe.exchange(identity.tenant_id, identity.client_id, token, scope)
    if isinstance(exchanged, EntraRefusal):
        return _exchange_refused(w, b, identity, exchanged, claims)

    # 3. one harmless data-plane read with Entra's token
    if not readable or not account.endpoint:
        return access_proof.no_entra_endpoint(claims, account.endpoint)
    return _data_plane(w, b, identity, account.endpoint, w.probe.read_models(account.endpoint, exchanged), claims)


def _judge_verdict(
    w: World, b: Binding, identity: IdentityState, account: AccountState, verdict: pod_proof.PodVerdict
) -> Check:
    """The in-cluster proof's verdict, stage by stage, through the same decisions as Keyless's own proof."""
    if verdict.missing_tool:
        return access_proof.not_provable_in_cluster(verdict.missing_tool)
    if verdict.token_error is not None:
        reason = verdict.token_error
        return access_proof.token_refused(reason, temporary=verdict.token_temporary, not_found=" not found" in reason)
    if verdict.claims is None:
        return access_proof.token_refused("the cluster's token is not a JWT", temporary=False)
    if verdict.refusal is not None:
        return _exchange_refused(w, b, identity, verdict.refusal, verdict.claims)
    if not account.custom_subdomain or not account.endpoint:
        return access_proof.no_entra_endpoint(verdict.claims, account.endpoint)
    if verdict.answer is None:
        return access_proof.in_cluster_incomplete(verdict.claims, "the in-cluster proof printed no data-plane answer")
    return _data_plane(w, b, identity, account.endpoint, verdict.answer, verdict.claims)


def _azure_rbac(w: World, b: Binding) -> bool | None:
    """Whether the cluster authorises with Azure RBAC (None: not known). Only read to explain a refusal."""
    try:
        return w.clusters.get(b.cluster).azure_rbac
    except KeylessError:
        return None


def _exchange_refused(
    w: World, b: Binding, identity: IdentityState, refusal: EntraRefusal, claims: TokenClaims
) -> Check:
    sub, rg = w.identity_location(b)
    try:
        credentials = w.identities.list_credentials(sub, rg, identity.name)
    except KeylessError:
        credentials = []
    return access_proof.exchange_refused(refusal, claims, credentials)


def _data_plane(
    w: World, b: Binding, identity: IdentityState, endpoint: str, answer: DataPlaneAnswer, claims: TokenClaims
) -> Check:
    grants: bool | None = None
    if answer.code == access_proof.PERMISSION_DENIED:
        grants = _holds_data_action(w, b, identity)
    return access_proof.data_plane_answered(answer, claims, endpoint, grants)


def _holds_data_action(w: World, b: Binding, identity: IdentityState) -> bool | None:
    """Whether any role the identity holds at the account or above grants the read's data action
    (None: not known). Only read to tell "not effective yet" from "never will be"."""
    sub = b.account.subscription_id
    try:
        assignments = w.roles.list_for_principal(sub, str(b.account), identity.principal_id)
        for guid in {ra.role_guid for ra in assignments}:
            if access_proof.role_grants(*w.roles.data_actions(sub, guid, str(b.account))):
                return True
    except KeylessError:
        return None
    return False
