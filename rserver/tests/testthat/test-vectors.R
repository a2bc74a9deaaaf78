# The golden messages in protocol/vectors: the Python suite checks the same bytes.
vectors <- jsonlite::fromJSON(vectors_path(), simplifyVector = FALSE)

test_that("there are golden vectors for every op and reply kind", {
  ops <- vapply(vectors, function(v) rserver:::mp_decode(hex_to_raw(v$hex))$op, "")
  expect_true(all(c("hello", "eval", "call", "get", "assign", "release", "ping", "pong",
                    "interrupt", "shutdown", "result", "error", "output") %in% ops))
})

for (v in vectors) {
  local({
    v <- v
    bytes <- hex_to_raw(v$hex)
    test_that(paste("golden vector decodes:", v$name), {
      expect_identical(rserver:::mp_decode(bytes), eval(parse(text = v$r)))
    })
    if (!is.null(v$r_encode)) {
      test_that(paste("golden vector encodes byte for byte:", v$name), {
        expect_identical(rserver:::mp_encode(eval(parse(text = v$r_encode))), bytes)
      })
    }
  })
}
