#!/usr/bin/env bash
# Table I on shape_sorting (the paper's shape-sorting cube): scripts/table1.sh shape_sorting [OUT].
exec bash "$(dirname "${BASH_SOURCE[0]}")/table1.sh" shape_sorting "$@"
