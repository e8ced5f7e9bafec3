"""The Socket.IO contract, checked with python-socketio's client (a second, independent
implementation of Engine.IO v4 / Socket.IO v5), over long-polling only and over websocket only.

    python3 contract.py <edge> <token> <workspaceId> <conversationId>

For each transport: connect to /v1 with auth.token; an ack (workspace.subscribe); an error ack
(message.send to a conversation that does not exist); a binary attachment where JSON is expected
gets an error ack and the socket stays up; message.send over the socket gets the message back and
its message.new; the transport is cut and the client reconnects on its own and is served again.
Prints {"<transport>": {...}} on success; exits 1 with the reason on stderr otherwise.
"""

import json
import sys
import time
import uuid

import socketio

WAIT_S = 30


def fail(message):
    print(f"contract.py: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def wait_for(condition, what):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        check(time.monotonic() < deadline, f"{what}: not within {WAIT_S} s")
        time.sleep(0.05)


def run(edge, token, workspace_id, conversation_id, transport):
    client = socketio.Client(reconnection_delay=0.1, reconnection_delay_max=0.5)
    events = []
    connects = []
    client.on("*", lambda event, *args: events.append((event, args)), namespace="/v1")
    client.on("connect", lambda: connects.append(time.monotonic()), namespace="/v1")
    client.connect(edge, namespaces=["/v1"], auth={"token": token}, transports=[transport],
                   wait_timeout=WAIT_S)
    result = {"connected": client.transport()}

    def call(event, payload):
        try:
            return client.call(event, payload, namespace="/v1", timeout=WAIT_S)
        except socketio.exceptions.TimeoutError:
            fail(f"{transport}: no ack to {event} within {WAIT_S} s")

    subscribed = call("workspace.subscribe", {"workspaceIds": [workspace_id]})
    check(subscribed.get("ok") is True, f"{transport}: subscribe answered {subscribed}")

    missing = call("message.send", {"conversationId": "no-such-conversation",
                                    "localId": f"py-{transport}-missing",
                                    "content": {"type": "text", "text": "hi"}})
    check("error" in missing, f"{transport}: expected an error ack, got {missing}")
    result["errorCode"] = missing["error"]["code"]

    binary = call("message.send", {"conversationId": conversation_id,
                                   "localId": f"py-{transport}-binary",
                                   "content": {"type": "text", "text": b"not json text"}})
    check(binary.get("error", {}).get("code") == "INVALID_PAYLOAD",
          f"{transport}: a binary attachment got {binary}")
    check(client.connected, f"{transport}: disconnected by a binary attachment")

    local_id = f"py-{transport}-sent-{uuid.uuid4()}"
    sent = call("message.send", {"conversationId": conversation_id, "localId": local_id,
                                 "content": {"type": "text", "text": f"python over {transport}"}})
    check(sent.get("data", {}).get("localId") == local_id,
          f"{transport}: message.send answered {sent}")
    wait_for(lambda: any(event == "message.new" and args and args[0].get("id") == sent["data"]["id"]
                         for event, args in list(events)),
             f"{transport}: message.new of {sent['data']['id']}")

    # Lose the connection: the websocket closes under the client (a network loss), or the polling
    # session is one the server no longer knows (a node restart). The client reconnects.
    connected_before = len(connects)
    if transport == "websocket":
        client.eio.ws.close()
    else:
        client.eio.base_url = client.eio.base_url.replace(client.eio.sid, "gone")
    wait_for(lambda: len(connects) > connected_before and client.connected, f"{transport}: reconnect")
    again = call("workspace.subscribe", {"workspaceIds": [workspace_id]})
    check(again.get("ok") is True, f"{transport}: after reconnecting, subscribe answered {again}")
    result["reconnected"] = True
    client.disconnect()
    return result


def main():
    if len(sys.argv) != 5:
        print("usage: python3 contract.py <edge> <token> <workspaceId> <conversationId>",
              file=sys.stderr)
        sys.exit(2)
    edge, token, workspace_id, conversation_id = sys.argv[1:]
    report = {transport: run(edge, token, workspace_id, conversation_id, transport)
              for transport in ("polling", "websocket")}
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
