# The Arrow IPC stream codec, exposed for tests and tools (not exported).
# See protocol/SPEC.md ("Arrow payloads").
arrow_encode <- function(x) .Call(C_arrow_encode, x)
arrow_decode <- function(bytes) .Call(C_arrow_decode, bytes)
