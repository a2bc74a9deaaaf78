# Plot capture (SPEC §5b). A request with `plots` draws into a file device of
# its own, opened only when something draws (through options(device), so a
# request that draws nothing pays nothing) and closed when the request ends.
# The device writes one file per page, so a page shows its final state and a
# multi-page plot gives one image per page. Each page that is not blank goes to
# the client as a "display" message before the request's reply, also when the
# request fails. A device the user opened keeps receiving plots, as in R.

PLOT_MIMES <- c(png = "image/png", svg = "image/svg+xml")
MAX_PLOT_INCHES <- 100
MAX_PLOT_DPI <- 1200
MAX_PLOT_PIXELS <- 16384   # per side
MAX_PLOT_BYTES <- 64 * 2^20   # a page above this (option rserver.max_plot_bytes) is not sent: a warning says so

# Numbers of the capture devices open now, so that a nested request (made from
# a callback) that captures too opens its own instead of drawing into the outer one.
capture_devices <- new.env(parent = emptyenv())
capture_devices$open <- integer()

check_plot_spec <- function(spec) {
  ok_number <- function(x, most) is.numeric(x) && length(x) == 1L && is.finite(x) && x > 0 && x <= most
  if (!is.list(spec) || !is.character(spec$format) || length(spec$format) != 1L ||
      !spec$format %in% names(PLOT_MIMES))
    stop("'plots' must name a format: ", paste(names(PLOT_MIMES), collapse = " or "))
  if (!ok_number(spec$width, MAX_PLOT_INCHES) || !ok_number(spec$height, MAX_PLOT_INCHES))
    stop("'plots' width and height must be inches above 0 and at most ", MAX_PLOT_INCHES)
  if (!ok_number(spec$dpi, MAX_PLOT_DPI))
    stop("'plots' dpi must be above 0 and at most ", MAX_PLOT_DPI)
  pixels <- round(c(spec$width, spec$height) * spec$dpi)
  if (any(pixels < 1) || any(pixels > MAX_PLOT_PIXELS))
    stop("a plot of ", pixels[[1L]], " x ", pixels[[2L]], " pixels is outside 1 to ", MAX_PLOT_PIXELS, " per side")
  list(format = spec$format, width = as.double(spec$width), height = as.double(spec$height),
       dpi = as.double(spec$dpi))
}

# Starts capturing for one request (spec: the envelope's `plots`).
plots_begin <- function(spec) {
  capture <- new.env(parent = emptyenv())
  capture$spec <- check_plot_spec(spec)
  capture$dir <- NULL
  capture$opened <- integer()
  capture$previous <- grDevices::dev.cur()
  capture$saved <- options(device = function(...) open_capture(capture))
  if (capture$previous %in% capture_devices$open) open_capture(capture)
  capture
}

open_capture <- function(capture) {
  spec <- capture$spec
  if (is.null(capture$dir)) {
    capture$dir <- tempfile("rbridge-plots-")
    dir.create(capture$dir, mode = "0700")
  }
  file <- file.path(capture$dir, sprintf("d%02d-%%03d.%s", length(capture$opened) + 1L, spec$format))
  if (spec$format == "png") {
    type <- if (isTRUE(capabilities("cairo"))) "cairo" else getOption("bitmapType")
    grDevices::png(file, width = spec$width, height = spec$height, units = "in", res = spec$dpi, type = type)
  } else {
    grDevices::svg(file, width = spec$width, height = spec$height, onefile = FALSE)
  }
  device <- grDevices::dev.cur()
  capture$opened <- c(capture$opened, device)
  capture_devices$open <- c(capture_devices$open, device)
  invisible(device)
}

# Ends a request's capture: closes its devices, sends each page that is not
# blank, removes the files. Never fails: the request's own reply comes next.
plots_end <- function(capture, ctx) {
  options(capture$saved)
  if (is.null(capture$dir)) return(invisible())   # nothing drew
  tryCatch({
    for (device in capture$opened) if (device %in% grDevices::dev.list()) grDevices::dev.off(device)
    if (capture$previous > 1L && capture$previous %in% grDevices::dev.list()) grDevices::dev.set(capture$previous)
    for (file in sort(list.files(capture$dir, full.names = TRUE))) send_page(ctx, file, capture$spec)
  }, error = function(e) message("rserver: a plot could not be sent: ", conditionMessage(e)))
  capture_devices$open <- setdiff(capture_devices$open, capture$opened)
  unlink(capture$dir, recursive = TRUE)
  invisible()
}

send_page <- function(ctx, file, spec) {
  size <- file.size(file)
  most <- getOption("rserver.max_plot_bytes", MAX_PLOT_BYTES)
  if (size > most) {
    warning(sprintf("a plot page of %.1f MB was not sent (at most %.1f MB): draw fewer elements, use PNG rather ",
                    size / 2^20, most / 2^20), "than SVG, or save it to a file (ggsave, png)", call. = FALSE)
    return(invisible())
  }
  bytes <- readBin(file, "raw", size)
  if (length(bytes) == 0L || page_is_blank(bytes, spec$format)) return(invisible())
  scale <- if (spec$format == "png") spec$dpi else 72   # pixels; an SVG's size is in points
  size <- as.integer(round(c(spec$width, spec$height) * scale))
  .Call(C_display_send, ctx, PLOT_MIMES[[spec$format]], bytes, size)
}

# Whether a page shows nothing: by its pixels (PNG) or by its drawing
# elements besides the page's background (SVG), never by the file's size.
page_is_blank <- function(bytes, format) {
  if (format == "svg") return(svg_is_blank(rawToChar(bytes)))
  data <- .Call(C_png_image_data, bytes)
  if (is.null(data)) return(FALSE)
  pixels <- tryCatch(memDecompress(data, "gzip"), error = function(e) NULL)
  !is.null(pixels) && isTRUE(.Call(C_png_blank, bytes, pixels))
}

svg_is_blank <- function(text) {
  page <- sub("(?s)^.*?<g id=\"surface[0-9]+\">\\s*<rect [^>]*/>", "", text, perl = TRUE)
  !grepl("<(path|use|image|rect|text|line|polyline|polygon|circle|ellipse)\\b", page, perl = TRUE)
}

# Values that draw when printed at R's console (GRAPHICS_CLASSES): a visible
# one is drawn while a request captures plots, as the console would show it.
# Returns whether the value was one.
draw_visible <- function(value) {
  if (!inherits(value, GRAPHICS_CLASSES)) return(FALSE)
  if (inherits(value, "grob")) {   # a grob's print() describes it; grid.draw() draws it
    grid::grid.newpage()
    grid::grid.draw(value)
  } else {
    print(value)
  }
  TRUE
}
