# Writes OUT with the source tree's git revision (12 hex digits; "-dirty" when tracked files
# differ from HEAD; "unknown" outside a checkout), and only when it changed, so the one file that
# includes it is rebuilt when, and only when, the revision moves. Run at every build.
execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${SRC}
                OUTPUT_VARIABLE rev OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT rev)
  set(rev "unknown")
else()
  # --no-optional-locks: no index refresh (a build running beside a `git commit` must not take
  # .git/index.lock from it).
  execute_process(COMMAND git --no-optional-locks diff --quiet HEAD WORKING_DIRECTORY ${SRC} RESULT_VARIABLE dirty
                  ERROR_QUIET)
  if(NOT dirty EQUAL 0)
    set(rev "${rev}-dirty")
  endif()
endif()
set(text "#define QEVAL_GIT_REV \"${rev}\"\n")
set(old "")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUT} "${text}")
endif()
