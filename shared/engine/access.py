"""Proving access I/O: the workload's token from the cluster, Entra's exchange, one OpenAI read.

The stages run in order and stop at the first that does not pass; shared.domain.access_proof says
what each answer means. Extra reads happen only to explain a refusal: the identity's federated
credentials when Entra matched none; the roles it holds at the account or above, and their
definitions, when the data plane answered PermissionDenied.
"""

from __future__ import annotations

from shared.adapters.access_probe import token_claims
from shared.domain import access_proof, planner
from shared.domain.access_proof import EntraRefusal
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, NotFoundError, TemporaryError
from shared.domain.observed import AccountState, IdentityState
from shared.domain.verification import Check
from shared.engine.cluster_access import ClusterConnection
from shared.engine.world import World


def prove_access(
    w: World, b: Binding, identity: IdentityState, account: AccountState, connection: ClusterConnection
) -> Check:
    # 1. the token, as the kubelet would project it into the pod
    try:
        token = connection.call(
            lambda kube: kube.request_token(
                b.cluster, b.namespace, b.service_account, planner.AUDIENCE, access_proof.TOKEN_SECONDS
            )
        )
        claims = token_claims(token)
    except TemporaryError as exc:
        return access_proof.token_refused(exc.reason, temporary=True)
    except NotFoundError as exc:
        return access_proof.token_refused(exc.reason, temporary=False, not_found=True)
    except KeylessError as exc:
        return access_proof.token_refused(exc.reason, temporary=False, not_found=" not found" in exc.reason)
    except ValueError as exc:
        return access_proof.token_refused(str(exc), temporary=False)

    # 2. Entra's exchange, as azure-identity does it in the pod
    exchanged = w.probe.exchange(
        identity.tenant_id, identity.client_id, token, access_proof.openai_scope(account.endpoint)
    )
    if isinstance(exchanged, EntraRefusal):
        sub, rg = w.identity_location(b)
        try:
            credentials = w.identities.list_credentials(sub, rg, identity.name)
        except KeylessError:
            credentials = []
        return access_proof.exchange_refused(exchanged, claims, credentials)

    # 3. one harmless data-plane read with Entra's token
    if not account.custom_subdomain or not account.endpoint:
        return access_proof.no_entra_endpoint(claims, account.endpoint)
    answer = w.probe.read_models(account.endpoint, exchanged)
    grants: bool | None = None
    if answer.code == access_proof.PERMISSION_DENIED:
        grants = _holds_data_action(w, b, identity)
    return access_proof.data_plane_answered(answer, claims, account.endpoint, grants)


def _holds_data_action(w: World, b: Binding, identity: IdentityState) -> bool | None:
    """Whether any role the identity holds at the account or above grants the read's data action
    (None: not known). Only read to tell "not effective yet" from "never will be"."""
    sub = b.account.subscription_id
    try:
        assignments = w.roles.list_for_principal(sub, str(b.account), identity.principal_id)
        for guid in {ra.role_guid for ra in assignments}:
            if access_proof.role_grants(*w.roles.data_actions(sub, guid)):
                return True
    except KeylessError:
        return None
    return False
