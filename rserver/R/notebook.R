# Helpers of the IPython extension (bridge/ipython.py), called through `call`.

# A %%R cell, run as R's console runs code: each visible value is printed (at
# most CELL_MAX_PRINT entries, R's max.print, so a huge value cannot flood the
# notebook), and a plot object drawn (into the request's plot device, SPEC
# §5b). A data frame that ends the cell is not printed but returned as HTML
# and bounded text, for the notebook to show as a table. Warnings stream.
cell_eval <- function(code, envir = globalenv()) streaming_warnings(run_cell(parse_code(code), envir))

run_cell <- function(exprs, envir) {
  for (i in seq_along(exprs)) {
    shown <- withVisible(rbridge_eval(exprs[[i]], envir))
    if (!shown$visible || draw_visible(shown$value)) next
    if (i == length(exprs) && is.data.frame(shown$value))
      return(list(html = html_of(shown$value), text = repr_short(shown$value, seconds = 5)))
    print_bounded(shown$value)
  }
  invisible(NULL)
}

CELL_MAX_PRINT <- 2000L

print_bounded <- function(value) {
  old <- options(max.print = min(getOption("max.print"), CELL_MAX_PRINT))
  on.exit(options(old))
  print(value)
}

# Completions of the R code before the cursor, by R's own completer (utils'
# rcompgen, as R's console uses): the token it completed ("mtcars$m") and
# whole tokens that replace it ("mtcars$mpg").
complete_code <- function(line) {
  single_string(line, "line")
  complete <- utils::getFromNamespace(".completeToken", "utils")
  utils::getFromNamespace(".assignLinebuffer", "utils")(line)
  utils::getFromNamespace(".assignEnd", "utils")(nchar(line))
  utils::getFromNamespace(".guessTokenFromLine", "utils")()
  suppressWarnings(complete())   # rcompgen trips over some partial code
  list(token = get("token", envir = utils::getFromNamespace(".CompletionEnv", "utils")),
       completions = as.list(as.character(utils::getFromNamespace(".retrieveCompletions", "utils")())))
}

# A %R line: its value, which the notebook shows; a plot object is not drawn
# here (IPython shows the returned object itself, once).
line_eval <- function(code) streaming_warnings(eval_code(code, globalenv()))

# Warnings printed to stderr as they happen, as R does with options(warn = 1),
# so that they stream into the cell while R runs (the client's own warnings
# come only with the reply). They are muffled after printing.
streaming_warnings <- function(expr) {
  withCallingHandlers(expr, warning = function(w) {
    call <- conditionCall(w)
    top <- is.null(call) || identical(call, quote(eval(expr, envir)))   # the cell's own code (rbridge_eval)
    where <- if (top) "Warning: "
             else paste0("Warning in ", paste(deparse(call, nlines = 1L), collapse = ""), " : ")
    message(where, conditionMessage(w))
    invokeRestart("muffleWarning")
  })
}
