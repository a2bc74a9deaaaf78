# Plot capture (SPEC §5b): the blank-page check reads pixels, for every PNG
# layout R's devices write, and never fails on bytes it does not understand.

png_bytes <- function(draw, ..., type = "cairo") {
  f <- tempfile(fileext = ".png")
  on.exit(unlink(f))
  grDevices::png(f, width = 240, height = 180, type = type, ...)
  draw()
  grDevices::dev.off()
  readBin(f, "raw", file.size(f))
}

test_that("a page is blank when its pixels have one colour, whatever the file's size", {
  expect_true(rserver:::page_is_blank(png_bytes(function() plot.new()), "png"))
  expect_true(rserver:::page_is_blank(png_bytes(function() { par(bg = "tomato"); plot.new() }), "png"))
  expect_true(rserver:::page_is_blank(png_bytes(function() plot.new(), bg = "transparent"), "png"))
  expect_false(rserver:::page_is_blank(png_bytes(function() { plot.new(); points(0.5, 0.5, pch = ".") }), "png"))
  expect_false(rserver:::page_is_blank(png_bytes(function() plot(1:10)), "png"))
  # many colours: an RGB(A) image rather than a palette
  many <- function() { plot.new(); rasterImage(as.raster(matrix(rainbow(400), 20)), 0, 0, 1, 1) }
  expect_false(rserver:::page_is_blank(png_bytes(many), "png"))
  expect_false(rserver:::page_is_blank(png_bytes(many, bg = "transparent"), "png"))
})

test_that("bytes the check does not understand count as a picture, never as blank", {
  good <- png_bytes(function() plot.new())
  expect_false(rserver:::page_is_blank(as.raw(1:100), "png"))
  expect_false(rserver:::page_is_blank(good[1:60], "png"))            # cut inside a chunk
  bad <- good
  bad[12] <- as.raw(0xff)                                              # the IHDR length
  expect_false(rserver:::page_is_blank(bad, "png"))
  expect_null(.Call(rserver:::C_png_image_data, as.raw(c(0x89, 0x50))))
  expect_true(is.na(.Call(rserver:::C_png_blank, good, as.raw(1:10))))   # image data of the wrong size
})

test_that("an SVG page is blank when it draws nothing but its background", {
  svg_text <- function(draw) {
    f <- tempfile(fileext = ".svg")
    on.exit(unlink(f))
    grDevices::svg(f, 3, 3)
    draw()
    grDevices::dev.off()
    paste(readLines(f), collapse = "\n")
  }
  expect_true(rserver:::svg_is_blank(svg_text(function() plot.new())))
  expect_false(rserver:::svg_is_blank(svg_text(function() plot(1))))
  expect_false(rserver:::svg_is_blank(svg_text(function() { plot.new(); text(0.5, 0.5, "a") })))
})

test_that("a plot spec is checked before a request runs", {
  spec <- list(format = "png", width = 7, height = 5, dpi = 144)
  expect_identical(rserver:::check_plot_spec(spec), spec)
  expect_error(rserver:::check_plot_spec(modifyList(spec, list(format = "gif"))), "png or svg")
  expect_error(rserver:::check_plot_spec(modifyList(spec, list(width = -1))), "inches")
  expect_error(rserver:::check_plot_spec(modifyList(spec, list(height = NA_real_))), "inches")
  expect_error(rserver:::check_plot_spec(modifyList(spec, list(dpi = 5000))), "dpi")
  expect_error(rserver:::check_plot_spec(modifyList(spec, list(width = 100, dpi = 1000))), "16384")
  expect_error(rserver:::check_plot_spec("png"), "format")
})

test_that("notebook displays stay bounded and escaped", {
  big <- data.frame(x = seq_len(1e5), s = rep("<b>&", 1e5))
  html <- rserver:::html_of(big)
  expect_match(html, "100000 rows x 2 columns, first 10 rows", fixed = TRUE)
  expect_match(html, "&lt;b&gt;&amp;", fixed = TRUE)
  expect_false(grepl("<b>", html, fixed = TRUE))
  expect_lt(nchar(html), 5000)
  wide <- as.data.frame(matrix(1, 2, 50))
  expect_match(rserver:::html_of(wide), "first 20 columns", fixed = TRUE)
  long <- rserver:::html_of(1:1e5)
  expect_match(long, "more lines)</pre>$")
  expect_lt(nchar(long), 10000)
  expect_null(rserver:::html_of(structure(list(), class = c("gg", "ggplot"))))
  expect_identical(rserver:::complete_code("mtcars$mp"), list(token = "mtcars$mp", completions = list("mtcars$mpg")))
})

test_that("a notebook cell prints each visible value, bounded, and returns a closing data frame as a table", {
  out <- utils::capture.output(shown <- rserver:::cell_eval("x <- 1; x + 1\ninvisible(3)\n1:1e6\nhead(mtcars, 3)"))
  expect_identical(out[[1L]], "[1] 2")
  expect_true(any(grepl("omitted 998000 entries", out)))
  expect_lt(length(out), 300L)
  expect_match(shown$html, "3 rows x 11 columns", fixed = TRUE)
  expect_null(rserver:::cell_eval("y <- 2"))
  expect_identical(getOption("max.print"), 99999L)
})

test_that("a notebook's warnings are printed as they happen, as R does with warn = 1", {
  msgs <- character()
  withCallingHandlers(
    rserver:::cell_eval("f <- function() warning('inside f')\nf()\nwarning('top')\nas.integer('x')"),
    message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") },
    warning = function(w) stop("a warning was not muffled: ", conditionMessage(w)))
  expect_identical(msgs, c("Warning in f() : inside f\n", "Warning: top\n", "Warning: NAs introduced by coercion\n"))
})
