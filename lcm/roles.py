"""Roles (SPEC §5.1): `admin` = staff or group `lcm-admins`; `instructor` = group `instructors`."""

ADMIN_GROUP = "lcm-admins"
INSTRUCTOR_GROUP = "instructors"


def _groups(user) -> set[str]:
    cached = getattr(user, "_lcm_group_names", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True)) if user.is_authenticated else set()
        user._lcm_group_names = cached
    return cached


def is_admin(user) -> bool:
    """Admins manage workers, templates, definitions and settings, and do everything instructors do."""
    return bool(user and user.is_authenticated and user.is_active and (user.is_staff or ADMIN_GROUP in _groups(user)))


def is_instructor(user) -> bool:
    """Instructors book, watch and drive sessions and read reports (admins may too)."""
    return bool(
        user and user.is_authenticated and user.is_active and (is_admin(user) or INSTRUCTOR_GROUP in _groups(user))
    )
