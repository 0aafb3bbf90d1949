#!/bin/sh
# Prepares the OpenID Foundation's old OP test tool outside the repository.
#   tools/oidctest/setup.sh OIDCTEST_GIT OTEST_GIT [WORKDIR]
# OIDCTEST_GIT, OTEST_GIT: git directories (clones) of rohe/oidctest and rohe/otest
# (their last commits, e7593e0 and 8983db8, were used); WORKDIR: /work/oidctest.
# Needs a Python 3.8 as python3.8 (or $PY38): oic 1.1 does not import on 3.10+.
set -eu
OIDCTEST_GIT=$1
OTEST_GIT=$2
W=${3:-/work/oidctest}
PY38=${PY38:-python3.8}
mkdir -p "$W/src" "$W/otest"
git --git-dir="$OIDCTEST_GIT" archive HEAD | tar x -C "$W/src"
git --git-dir="$OTEST_GIT" archive HEAD | tar x -C "$W/otest"
"$PY38" -m venv "$W/venv"
# The repository's setup.py asks for oic>=1.1.2, otest>=0.8.0 (not on PyPI: from
# the otest repository), pyjwkest==1.4.3 and CherryPy==8.9.1.
"$W/venv/bin/pip" install -q 'oic>=1.1.2,<1.2' "$W/otest" 'pyjwkest==1.4.3' \
    'CherryPy==8.9.1' psutil 'cherrypy-cors>=1.5' six future requests beautifulsoup4 \
    'cryptography<44'
"$W/venv/bin/pip" install -q --no-deps -e "$W/src"
# The tool's instance directory (flows, templates, keys): oidc_setup.py copies
# them, then fails calling make_entity_info.py, which a static registration
# does not need.
"$W/venv/bin/python" "$W/src/script/oidc_setup.py" "$W/src" "$W/inst" || true
cat > "$W/inst/oidc_op/tt_config.py" <<'PYEOF'
import os

BASEDIR = os.path.abspath(os.path.dirname(__file__))
SERVER_CERT = "certs/cert.pem"
SERVER_KEY = "certs/key.pem"
CA_BUNDLE = None
VERIFY_SSL = False
BASE = 'http://localhost'
ENT_PATH = 'entities'
ENT_INFO = 'entity_info'
PRE_HTML = 'html/tt'
KEYS = [
    {"key": "keys/enc.key", "type": "RSA", "use": ["enc"]},
    {"key": "keys/sig.key", "type": "RSA", "use": ["sig"]},
    {"crv": "P-256", "type": "EC", "use": ["sig"]},
    {"crv": "P-256", "type": "EC", "use": ["enc"]}
]
SESSION_CHANGE_URL = '{}session_change'
SESSION_UNCHANGE_URL = '{}session_unchange'
SESSION_MAX_CHECKS = 3
PYEOF
echo "ready: $W/inst/oidc_op"
