from django.apps import AppConfig


class LabletSessionsConfig(AppConfig):
    """Lablet definitions, sessions and user sessions.

    The label is `lablets` so it does not clash with `django.contrib.sessions`.
    """

    name = "sessions"
    label = "lablets"
    verbose_name = "Lablet sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here: these modules use the models, which exist only once the app registry is ready.
        from lcm import live, loops, metrics, notifications, projection, webhooks
        from lcm.templatetags.badges import register_colours
        from sessions import events, notices, reconcilers, selectors
        from sessions.states import DEFINITION_BADGE_COLOURS, SESSION_BADGE_COLOURS, USER_SESSION_BADGE_COLOURS

        loops.register(
            loops.Loop(
                "lablets",
                reconcilers.sessions_needing_work,
                "LCM_LOOP_LABLETS_SECONDS",
                reconciler=reconcilers.reconcile_session,
                on_error=reconcilers.record_failure,
                description="Instantiates, runs, grades and tears down sessions",
            )
        )
        live.register_expander(selectors.exam_scopes)
        projection.register(("session",), reconcilers.project_sessions)
        metrics.register_gauges(selectors.session_gauges)
        for kind, description in notices.KINDS.items():
            notifications.register_kind(kind, description)
        notifications.register_trigger("session", notices.ENDS, notices.session_end_notices)
        webhooks.register("LCM_LDS_EVENT_PREFIX", events.handle_lds_event)
        register_colours("session", SESSION_BADGE_COLOURS)
        register_colours("user_session", USER_SESSION_BADGE_COLOURS)
        register_colours("definition", DEFINITION_BADGE_COLOURS)
