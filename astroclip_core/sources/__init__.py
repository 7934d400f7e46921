"""Where survey files live (release layouts, URL and S3 roots) and how to fetch them."""
