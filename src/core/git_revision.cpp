// The revision the binary was built from: git_rev.inc is written by cmake/git_rev.cmake at every
// build, and changes (rebuilding this file alone) only when the revision does.
#include "core/text.h"

#include "git_rev.inc"

namespace qeval {

const char* git_revision() { return QEVAL_GIT_REV; }

}  // namespace qeval
