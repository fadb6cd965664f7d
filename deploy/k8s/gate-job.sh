#!/usr/bin/env bash
# Wait for a Job to finish and exit as its commands did, so a pipeline can gate on it:
#   0 when the Job is Complete (for breakout-dqn-gate: every seed released); when it Failed, the
#   exit code of the container that failed it (for breakout-dqn-gate: 2 usage error, missing
#   model or a run that cannot be averaged, 3 contract failure, 4 parity gate failed or mean score
#   below the floor; see docs/guides/kubernetes.md): the first one found other than 1, else 1 (an I/O error, a
#   deadline, pods gone); 1 also when the wait times out. A gate Job fails per seed: the seeds
#   that passed are released all the same (deploy/k8s/promote.sh promotes one of them).
#
#   bash deploy/k8s/gate-job.sh JOB [TIMEOUT_SECONDS]     (default 3600; env: KUBECTL, POLL_SECONDS)
#
# Uses the current kubectl context and namespace (pass the namespace through
# KUBECTL="kubectl -n breakout-dqn-training").
set -euo pipefail
job=${1:?usage: gate-job.sh JOB [TIMEOUT_SECONDS]}
timeout=${2:-3600}
read -r -a kubectl <<<"${KUBECTL:-kubectl}"
deadline=$(( $(date +%s) + timeout ))

while :; do
  conditions=$("${kubectl[@]}" get job "$job" -o 'jsonpath={range .status.conditions[?(@.status=="True")]}{.type} {end}')
  case " $conditions " in
    *" Complete "*) echo "$job: Complete"; exit 0 ;;
    *" Failed "*) break ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "$job: not finished after ${timeout} s (conditions: ${conditions:-none})"
    exit 1
  fi
  sleep "${POLL_SECONDS:-10}"
done

"${kubectl[@]}" get job "$job" -o 'jsonpath={range .status.conditions[?(@.type=="Failed")]}{.reason}: {.message}{"\n"}{end}'
# One line per container of each pod, init containers first as they ran: NAME EXIT_CODE (empty
# when the container did not terminate, e.g. verify after a failed export).
statuses=$("${kubectl[@]}" get pods -l "batch.kubernetes.io/job-name=$job" -o 'jsonpath={range .items[*]}{range .status.initContainerStatuses[*]}{.name} {.state.terminated.exitCode}{"\n"}{end}{range .status.containerStatuses[*]}{.name} {.state.terminated.exitCode}{"\n"}{end}{end}')
code=1
while read -r container exit_code; do
  if [[ "$exit_code" =~ ^[0-9]+$ ]] && [ "$exit_code" != 0 ]; then
    echo "$job: container $container exited $exit_code"
    [ "$code" != 1 ] || code=$exit_code  # keep the first verdict; exit 1 (I/O) is retried by the Job
  fi
done <<<"$statuses"
exit "$code"
