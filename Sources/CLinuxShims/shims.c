#include "clinuxshims.h"
#include <spawn.h>

int pgws_spawn_close_from(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}
