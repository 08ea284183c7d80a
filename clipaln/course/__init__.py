"""A class with the series: student and instructor editions, autograded exercises and quizzes.

The grader is otter-grader (docs/teaching.md says why): `clipaln course build` writes otter's test
files and autograder zips, `clipaln course grade` runs otter's local grading on each submission.
`checks` is what those test files call in the student's kernel; `editions` builds the two editions;
`grading` grades a folder of submissions.
"""
