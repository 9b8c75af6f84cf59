#!/usr/bin/env bash
# Install intent-router, fine-tune the 3-intent ATIS example, classify a few utterances, then start the
# router service on that model and route an utterance through it over HTTP. The service keeps running
# (Ctrl-C stops it).
# Data: ../shared/datasets/atis next to the project, or set ATIS_DIR to a folder with atis_3class.csv.
# PORT: the router's port (8000). STEPS: fine-tuning steps (default: scaled to the data; fewer is quicker).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
atis=${ATIS_DIR:-$root/../shared/datasets/atis}
port=${PORT:-8000}
[ -f "$atis/atis_3class.csv" ] || { echo "no $atis/atis_3class.csv: set ATIS_DIR to the folder holding it" >&2; exit 1; }
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then  # something listens there: the router could not start
  echo "port $port is in use (another router still running?): stop it, or set PORT to a free port" >&2
  exit 1
fi
cd "$root"
INTENT_ROUTER_SKIP_RASA=1 ./install.sh  # the Rasa environment is for the Rasa component's tests
export HF_HUB_OFFLINE=1
router=.venv/bin/intent-router
$router preview "$atis/atis_3class.csv" --rows 5
$router train "$atis/atis_3class.csv" --name atis-3 --overwrite ${STEPS:+--steps "$STEPS"}
$router predict atis-3 "show me fares from boston to denver" \
  "is there a shuttle from the airport to downtown" "which airlines fly from atlanta to dallas"

[ -s .intent-router-key ] || $router keys create --scope admin --name quickstart > .intent-router-key
key=$(cat .intent-router-key)
$router serve --port "$port" --config examples/atis/routers.yml &
server=$!
trap 'kill $server 2>/dev/null' EXIT
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
  kill -0 $server 2>/dev/null || { echo "the router did not start: see its error above" >&2; exit 1; }
  sleep 0.5
done
echo "POST /v1/route:"
curl -s "http://127.0.0.1:$port/v1/route" -H "Authorization: Bearer $key" -H "Content-Type: application/json" \
  -d '{"text": "how much is a round trip ticket from boston to denver", "router": "atis"}'
echo
echo "The router is running on http://127.0.0.1:$port (API docs: /docs; admin key in .intent-router-key)."
echo "Try the chatbot hook: .venv/bin/python examples/atis/chatbot.py --key \$(cat .intent-router-key)"
echo "Stop the router with Ctrl-C."
wait $server
