"""What the caller of one request may see and do, computed once from its role assignments."""

from __future__ import annotations

from dataclasses import dataclass

from models import AccessRequest, SupportRequest
from service.auth import Caller
from service.directory import roles_of
from service.policy import Policy


@dataclass(frozen=True)
class Viewer:
    caller: Caller
    admin_of: frozenset[str]  # tenants where it may manage support access
    log_reader_of: frozenset[str]  # tenants whose audit logs it may read
    is_engineer: bool
    is_operator: bool
    is_decision_client: bool

    @property
    def principal(self) -> str:
        return self.caller.principal

    # --- tickets -----------------------------------------------------------------

    def sees_ticket(self, ticket: SupportRequest) -> bool:
        if self.is_operator or self.is_engineer or ticket.tenant_id in self.admin_of:
            return True
        if ticket.resource_tenant_id in self.admin_of:
            # The resource tenant sees a ticket only while an access request of it concerns it.
            return ticket.access_requests.exists()
        return False

    def may_manage_ticket(self, ticket: SupportRequest) -> bool:
        return ticket.tenant_id in self.admin_of

    # --- access requests -----------------------------------------------------------

    def view_of(self, request: AccessRequest, tenant_id: str | None = None) -> str | None:
        """Which view ('resource' or 'support_request') the caller gets, None if hidden.

        `tenant_id` picks the view for an admin of both tenants; default the resource's.
        """
        resource, requester = request.resource_tenant_id, request.support_request_tenant_id
        if tenant_id is not None:
            if tenant_id == resource and (resource in self.admin_of or self._sees_all(request)):
                return "resource"
            if tenant_id == requester and (requester in self.admin_of or self._sees_all(request)):
                return "resource" if requester == resource else "support_request"
            return None
        if resource in self.admin_of or self._sees_all(request):
            return "resource"
        if requester in self.admin_of:
            return "support_request"
        return None

    def _sees_all(self, request: AccessRequest) -> bool:
        """Operators see everything; an engineer sees the requests it filed."""
        return self.is_operator or (self.is_engineer and request.engineer == self.principal)


def viewer_for(policy: Policy, caller: Caller, provider: str) -> Viewer:
    roles = roles_of(caller.principal)

    def tenants(permission: str) -> frozenset[str]:
        return frozenset(t for t, role in roles if policy.role_allows(role, permission))

    def in_provider(permission: str) -> bool:
        return provider in tenants(permission)

    return Viewer(
        caller=caller,
        admin_of=tenants("manage_support_access"),
        log_reader_of=tenants("read_audit_logs"),
        is_engineer=in_provider("work_tickets"),
        is_operator=in_provider("operate"),
        is_decision_client=in_provider("evaluate_decisions"),
    )
