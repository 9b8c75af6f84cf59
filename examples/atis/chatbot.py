"""A chatbot's hook into the router: each user utterance goes to /v1/route before the bot's own NLU.

    python examples/atis/chatbot.py --url http://127.0.0.1:8000 --key ir_...   # type utterances; Ctrl-D ends

The router answers with an intent and a destination; the bot dispatches on it. A fallback goes to the
bot's own NLU (or a human), and an ambiguous answer asks the user which of the candidates was meant.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid

from intent_router.client import Route, RouterClient, RouterError


def handle(route: Route) -> str:
    """What the bot does with a routing decision: the dispatch table a real bot would have."""
    if route.reason == "ambiguous":
        options = " or ".join([route.intent or "?"] + [a["intent"] for a in route.alternatives[:1]])
        return f"Did you mean {options}?"
    if route.fallback:
        return f"[{route.destination}] handing over to the bot's own NLU ({route.reason}, {route.confidence:.2f})"
    if route.destination.startswith(("http://", "https://")):
        return f"[webhook {route.destination}] forwarding intent {route.intent} ({route.confidence:.2f})"
    return f"[{route.destination}] handling intent {route.intent} ({route.confidence:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default=os.environ.get("INTENT_ROUTER_API_KEY"), help="an inference or admin key")
    parser.add_argument("--router", default=None, help="router name (default: the only one)")
    args = parser.parse_args()
    conversation = uuid.uuid4().hex[:8]
    with RouterClient(args.url, args.key) as client:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                route = client.route(line.strip(), router=args.router, conversation_id=conversation)
            except RouterError as error:
                print(f"router error: {error}", file=sys.stderr)
                continue
            print(f"> {line.strip()}\n  {handle(route)}", flush=True)


if __name__ == "__main__":
    main()
