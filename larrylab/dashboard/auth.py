"""Who may change the registry from the dashboard (Promote, Roll back).

Reading is open to whoever reaches the dashboard; acting needs one of:

- the admin key (`LARRYLAB_ADMIN_KEY`, the router's), entered in the sidebar and kept in this
  browser session's `st.session_state` (checked again on every run, so a rotated key locks
  open sessions);
- a login through Streamlit's OIDC support (`[auth]` in `.streamlit/secrets.toml`), limited to
  the e-mail addresses in `[larrylab] dashboard_users` when that list is given;
- neither configured: only a dashboard bound to loopback acts, under a warning banner.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import streamlit as st

from larrylab.config import Settings, is_loopback

SESSION_KEY = "larrylab_admin_key"
KEY_INPUT = "admin_key_input"
UNLOCK = "admin_unlock"
LOCK = "admin_lock"
LOGIN = "oidc_login"
LOGOUT = "oidc_logout"


@dataclass(frozen=True)
class Access:
    """What this session may do: `actor` names it in the audit log; `why_not` explains a
    read-only session; `warning` is the banner of a dashboard without any login."""

    can_act: bool
    actor: str = "dashboard"
    why_not: str = ""
    warning: str = ""


def key_matches(entered: str, admin_key: str) -> bool:
    """True if `entered` is the configured admin key (constant time; never for an empty key)."""
    if not admin_key or not entered:
        return False
    return hmac.compare_digest(entered.encode(), admin_key.encode())


def admin_key() -> str:
    """The configured admin key (`LARRYLAB_ADMIN_KEY`), "" when unset."""
    return Settings().admin_key


def oidc_section() -> dict[str, Any] | None:
    """The `[auth]` section of Streamlit's secrets, or None when OIDC is not configured."""
    if not st.secrets.load_if_toml_exists() or "auth" not in st.secrets:
        return None
    return dict(st.secrets["auth"])


def dashboard_users() -> list[str]:
    """The e-mail addresses allowed to act after an OIDC login (empty: every logged-in user)."""
    if not st.secrets.load_if_toml_exists() or "larrylab" not in st.secrets:
        return []
    return [str(u).strip().lower() for u in st.secrets["larrylab"].get("dashboard_users", [])]


def _oidc_access() -> Access:
    if not st.user.get("is_logged_in"):
        return Access(False, why_not="Log in (sidebar) to promote or roll back.")
    email = str(st.user.get("email") or "").strip().lower()
    allowed = dashboard_users()
    if allowed and email not in allowed:
        return Access(False, why_not=f"{email or 'This account'} may read but not act here.")
    return Access(True, actor=f"dashboard ({email or st.user.get('sub') or 'oidc'})")


def current_access() -> Access:
    """This session's access, from the admin key, the OIDC login and the bound address."""
    key = admin_key()
    if key and key_matches(str(st.session_state.get(SESSION_KEY, "")), key):
        return Access(True, actor="dashboard (admin key)")
    oidc = oidc_section()
    if oidc is not None:
        access = _oidc_access()
        if access.can_act or not key:
            return access
    if key:
        return Access(
            False, why_not="This session is read-only: enter the admin key (sidebar) to act."
        )
    address = st.get_option("server.address")
    if not is_loopback(address or ""):
        return Access(
            False,
            why_not="This dashboard is read-only: it has no login.",
            warning=f"Read-only: bound to {address or 'every interface'} without "
            "LARRYLAB_ADMIN_KEY. Set it (or configure an OIDC login) to act.",
        )
    return Access(
        True,
        warning="This dashboard has no login: anyone on this machine who can open it can "
        "promote and roll back. Set LARRYLAB_ADMIN_KEY to require the admin key.",
    )


def _key_form() -> None:
    with st.form("admin_key_form", clear_on_submit=True, border=False):
        entered = st.text_input("Admin key", type="password", key=KEY_INPUT)
        if st.form_submit_button("Unlock", key=UNLOCK):
            if key_matches(entered, admin_key()):
                st.session_state[SESSION_KEY] = entered
                st.rerun()
            st.session_state.pop(SESSION_KEY, None)
            st.error("That is not the admin key.")


def _key_controls() -> None:
    if key_matches(str(st.session_state.get(SESSION_KEY, "")), admin_key()):
        st.caption("Unlocked with the admin key.")
        if st.button("Lock", key=LOCK):
            st.session_state.pop(SESSION_KEY, None)
            st.rerun()
    else:
        _key_form()


def _login_buttons(oidc: dict[str, Any]) -> None:
    if st.user.get("is_logged_in"):
        st.caption(f"Logged in as {st.user.get('email') or st.user.get('name') or 'you'}.")
        if st.button("Log out", key=LOGOUT):
            st.logout()
        return
    providers = [k for k, v in oidc.items() if isinstance(v, dict)]
    if st.button("Log in", key=LOGIN):
        st.login(None if "client_id" in oidc or not providers else providers[0])


def sidebar() -> Access:
    """The login controls in the sidebar, then this session's access (with the banner of a
    dashboard without a login)."""
    oidc = oidc_section()
    with st.sidebar:
        if oidc is not None:
            _login_buttons(oidc)
        if admin_key():
            _key_controls()
    access = current_access()
    if access.warning:
        st.warning(access.warning, icon=":material/lock_open:")
    return access
