"""The staff console (``/console``): sign-in with a second factor, roles, and the shell
every staff page lives in.

How another area adds to it (from its *presentation* code, e.g. ``billing/routes.py``;
domains themselves never import the console):

- a page: an ``APIRouter`` whose routes take ``Annotated[Principal,
  Depends(require_role(Role.cashier, ...))]`` as their FIRST parameter (``console.auth``).
  That one dependency checks the session, the role (403 + audit row) and, on POST, the CSRF
  token (forms carry ``<input type="hidden" name="csrf_token" value="{{ csrf_token }}">``).
  Render with ``console.routes.render`` so the page gets the shell and the left nav;
- a nav entry: ``console.nav.register_nav_item(href, title_key, roles)``;
- a dashboard number: ``console.dashboard.register_dashboard_tile(key, provider)``;
- an integration-health panel: ``console.health.register_health_panel(key, provider)``.

Words shown to staff come from ``locale/console.{zh-CN,en}.json``.
"""
