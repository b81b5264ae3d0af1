"""acneops: anonymous synthetic face datasets with measured usefulness and anonymity.

Importing the package is cheap and has no side effects: torch, mlflow and prefect are imported
only inside the functions that need them.
"""

__version__ = "0.1.0"
