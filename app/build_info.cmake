# Writes OUT (captioner_build_info.h) with the git revision of SOURCE_DIR, so that
# `captioner --version` names the commit it was built from. Run at every build; the header is
# replaced only when the revision changes, so an unchanged tree recompiles nothing.
execute_process(COMMAND git -C "${SOURCE_DIR}" rev-parse --short=12 HEAD
  OUTPUT_VARIABLE revision OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE failed)
if(failed OR revision STREQUAL "")
  set(revision "unknown")  # built from a tarball, or git refuses the tree
else()
  execute_process(COMMAND git -C "${SOURCE_DIR}" status --porcelain --untracked-files=no
    OUTPUT_VARIABLE changes ERROR_QUIET)
  if(NOT changes STREQUAL "")
    set(revision "${revision}, modified")
  endif()
endif()
file(WRITE "${OUT}.new" "#define CAPTIONER_GIT_REVISION \"${revision}\"\n")
execute_process(COMMAND "${CMAKE_COMMAND}" -E copy_if_different "${OUT}.new" "${OUT}")
file(REMOVE "${OUT}.new")
