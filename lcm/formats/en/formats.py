"""24-h ISO formats for every page Django formats itself (the admin's lists and read-only fields):
"2026-12-05 14:30:00" instead of en-US's "Dec. 5, 2026, 2:30 p.m." (settings.FORMAT_MODULE_PATH)."""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i:s"
TIME_FORMAT = "H:i"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
MONTH_DAY_FORMAT = "F j"
YEAR_MONTH_FORMAT = "F Y"
FIRST_DAY_OF_WEEK = 1  # Monday
