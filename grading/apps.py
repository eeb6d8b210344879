from django.apps import AppConfig


class GradingConfig(AppConfig):
    """Grading sessions and score reports."""

    name = "grading"
    verbose_name = "Grading"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here: these modules use the models, which exist only once the app registry is ready.
        from grading import events, evidence, notices, reconcilers, regrade, services
        from grading.states import (
            EVIDENCE_BADGE_COLOURS,
            GRADING_BADGE_COLOURS,
            REGRADE_BADGE_COLOURS,
            RESULT_BADGE_COLOURS,
            GradingStatus,
        )
        from lcm import loops, notifications, webhooks
        from lcm.templatetags.badges import register_colours
        from scheduling.selectors import register_capacity_holder
        from sessions.reconcilers import register_status_handler, register_teardown_step, register_wipe_gate
        from sessions.services import register_transition_hook
        from sessions.states import SessionStatus

        webhooks.register("LCM_GRADING_EVENT_PREFIX", events.handle_grading_event)
        register_transition_hook(SessionStatus.GRADING, services.on_session_grading)
        register_transition_hook(SessionStatus.STOPPING, services.on_session_stopping)
        for leaving_grading in (SessionStatus.STOPPING, SessionStatus.TERMINATED, SessionStatus.EXPIRED):
            register_transition_hook(leaving_grading, services.close_grading)
        register_teardown_step(reconcilers.release_engine)
        register_wipe_gate(evidence.evidence_gate)
        register_capacity_holder(regrade.capacity_holds)
        loops.register(
            loops.Loop(
                "regrades",
                regrade.regrades_needing_work,
                "LCM_LOOP_REGRADES_SECONDS",
                reconciler=regrade.reconcile_regrade,
                on_error=regrade.record_failure,
                description="Re-grades archived sessions from their evidence",
            )
        )
        loops.register(
            loops.Loop(
                "evidence",
                evidence.evidence_tick,
                "LCM_LOOP_EVIDENCE_SECONDS",
                description="Deletes evidence past its retention; sweeps orphaned objects",
            )
        )
        register_status_handler(SessionStatus.GRADING, reconcilers.on_session_grading)
        register_colours("grading_session", GRADING_BADGE_COLOURS)
        register_colours("result", RESULT_BADGE_COLOURS)
        register_colours("evidence", EVIDENCE_BADGE_COLOURS)
        register_colours("regrade", REGRADE_BADGE_COLOURS)
        for kind, description in notices.KINDS.items():
            notifications.register_kind(kind, description)
        notifications.register_trigger("grading_session", [GradingStatus.FAULTED], notices.grading_faulted_notices)
