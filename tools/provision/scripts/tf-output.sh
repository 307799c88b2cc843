#!/usr/bin/env bash
# Read the Terraform outputs of ENV's own state, for the Make targets (the scripts use lib.sh's
# tf_output). Refuses, in one line, a data dir that was never initialised for ENV or whose state
# belongs to another ENV (its `environment` output), rather than answering with whichever ENV
# was initialised last.
#   tf-output.sh --check    only the check
#   tf-output.sh NAME       the output NAME as raw text
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 && -n "$1" ]] || die "usage: $0 --check|NAME"
tf_check_state
[[ "$1" == --check ]] || tf_output "$1"
