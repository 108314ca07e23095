"""(being written)"""

from .table import CommandGroup

group = CommandGroup()
