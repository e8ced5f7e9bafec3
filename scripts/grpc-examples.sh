#!/usr/bin/env bash
# The README's grpcurl examples, run against a live stack (the end-to-end tests run this script):
# every gRPC server answers reflection and the standard health check without credentials, and
# an internal API answers with the service credential and refuses without it. Any
# grpcurl-compatible CLI works (grpcurl, or grpcurl-rs, which scripts/test.sh installs).
#
#   CRAWBL_SERVICE_TOKEN=… AUTH_ADDR=127.0.0.1:50051 CONVERSATION_ADDR=127.0.0.1:50052 \
#     RUNTIME_PROXY_ADDR=127.0.0.1:50053 scripts/grpc-examples.sh
set -euo pipefail

auth=${AUTH_ADDR:-127.0.0.1:50051}
conversation=${CONVERSATION_ADDR:-127.0.0.1:50052}
runtime_proxy=${RUNTIME_PROXY_ADDR:-127.0.0.1:50053}
token=${CRAWBL_SERVICE_TOKEN:?set CRAWBL_SERVICE_TOKEN to the service credential of the stack}
grpcurl=${GRPCURL:-grpcurl}

# Runs an example, echoing it (with the secret masked) and its output; fails unless the output
# contains `$expected`.
example() {
  local expected=$1
  shift
  local shown="" arg
  for arg in "$@"; do
    if [[ $arg == *"$token"* ]]; then
      shown+=" \"${arg//$token/\$CRAWBL_SERVICE_TOKEN}\""
    elif [[ $arg =~ ^[A-Za-z0-9./:_-]+$ ]]; then
      shown+=" $arg"
    else
      shown+=" '$arg'"
    fi
  done
  printf '\n$ grpcurl%s\n' "$shown"
  local output status=0
  output=$("$grpcurl" "$@" 2>&1) || status=$?
  # From a here-string, not a pipe: head leaving early must not kill the writer (SIGPIPE,
  # which pipefail and set -e turn into a silent exit).
  head -n 12 <<<"$output"
  if [[ $output != *"$expected"* ]]; then
    printf 'expected the output to contain %q (exit status %s)\n' "$expected" "$status" >&2
    exit 1
  fi
}

# Reflection and health need no credential, on every server.
for address in "$auth" "$conversation" "$runtime_proxy"; do
  example grpc.health.v1.Health -plaintext "$address" list
  example SERVING -plaintext -d '{"service": ""}' "$address" grpc.health.v1.Health/Check
done
example "rpc SignIn" -plaintext "$auth" describe crawbl.auth.v1.AuthService
example "rpc ForwardTurn" -plaintext "$runtime_proxy" describe crawbl.runtimeproxy.v1.RuntimeProxy
example "message SendMessageRequest" -plaintext "$conversation" describe crawbl.conversation.v1.SendMessageRequest

# The internal APIs answer with the service credential, and only with it.
example EdDSA -plaintext -H "authorization: Bearer $token" \
  "$auth" crawbl.auth.v1.AuthService/GetSigningKeys
example '"state"' -plaintext -H "x-service-token: $token" -d '{"workspaceId": "no-such-workspace"}' \
  "$runtime_proxy" crawbl.runtimeproxy.v1.RuntimeProxy/GetRuntime
example Unauthenticated -plaintext "$auth" crawbl.auth.v1.AuthService/GetSigningKeys

# Plans and usage, as a billing system sets and reads them.
example '"monthlyTokenQuota": "1000000"' -plaintext -H "authorization: Bearer $token" \
  -d '{"workspaceId": "billing-example", "plan": "pro", "monthlyTokenQuota": 1000000}' \
  "$conversation" crawbl.conversation.v1.ConversationService/SetWorkspacePlan
example '"plan": "pro"' -plaintext -H "authorization: Bearer $token" \
  -d '{"workspaceId": "billing-example"}' \
  "$conversation" crawbl.conversation.v1.ConversationService/GetWorkspaceUsage

printf '\ngrpc examples: all passed\n'
