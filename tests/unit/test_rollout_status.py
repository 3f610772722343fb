"""kubectl's "rollout complete" rule, as the Kubernetes driver reads a Deployment."""

from services.deploy.kubernetes import rollout_status


def deployment(generation=2, observed=2, replicas=3, status_replicas=3, updated=3, available=3, conditions=()):
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": status_replicas,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": list(conditions),
        },
    }


def test_complete_when_all_updated_replicas_are_available():
    status = rollout_status(deployment())
    assert (status.state, status.desired, status.current, status.updated, status.available) == ("succeeded", 3, 3, 3, 3)


def test_progressing_until_the_controller_observed_the_change():
    assert rollout_status(deployment(generation=3, observed=2)).state == "progressing"


def test_progressing_while_updating_terminating_or_not_yet_available():
    assert "1 of 3 new replicas" in rollout_status(deployment(updated=1)).message
    assert "old replicas" in rollout_status(deployment(status_replicas=4)).message
    assert rollout_status(deployment(available=2)).state == "progressing"


def test_progress_deadline_exceeded_is_failed():
    stalled = deployment(
        available=0,
        conditions=[
            {
                "type": "Progressing",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "web-7d" has timed out progressing.',
            }
        ],
    )
    status = rollout_status(stalled)
    assert status.state == "failed" and "timed out progressing" in status.message


def test_a_new_deployment_without_status_is_progressing():
    status = rollout_status({"metadata": {"generation": 1}, "spec": {"replicas": 2}})
    assert (status.state, status.desired, status.available) == ("progressing", 2, 0)


def test_a_scale_down_is_done_when_the_surplus_replicas_are_gone():
    shrinking = deployment(replicas=2, status_replicas=4, updated=4, available=4)
    assert rollout_status(shrinking).state == "progressing"
    assert rollout_status(deployment(replicas=2, status_replicas=2, updated=2, available=2)).state == "succeeded"
